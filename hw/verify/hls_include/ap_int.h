// fcnseg wrapper over the open-source ap_int.h (HLS_arbitrary_Precision_Types, next on the path).
//
// Vitis's ap_int.h also declares the 16-bit float `half` (through hls_half.h), and finn-plus's
// cnpy.h and finn-hlslib's interpret.hpp/flatten.hpp rely on that; the open-source headers do not
// declare it. This wrapper declares it first, then includes the real header unchanged.
#ifndef FCNSEG_AP_INT_WRAPPER_H
#define FCNSEG_AP_INT_WRAPPER_H
#include "hls_half.h"
#include_next <ap_int.h>
#endif
