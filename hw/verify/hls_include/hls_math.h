// fcnseg stand-in for Vitis HLS's hls_math.h (C simulation only; Vitis is not installed here).
//
// finn-hlslib includes it for a few float helpers; the integer layers fcnseg builds call none
// of Vitis's own functions, so the C library's math is enough.
#ifndef FCNSEG_HLS_MATH_H
#define FCNSEG_HLS_MATH_H
#include <cmath>
#include "hls_half.h"
namespace hls {
using std::abs;
using std::exp;
using std::floor;
using std::log;
using std::sqrt;
}  // namespace hls
#endif
