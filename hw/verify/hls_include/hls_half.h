// fcnseg stand-in for Vitis HLS's hls_half.h (C simulation only; Vitis is not installed here).
//
// `half` names the 16-bit IEEE float; GCC 12+ provides it on x86-64 as _Float16. finn-plus's
// cnpy.h and finn-hlslib's flatten.hpp/interpret.hpp mention the type; fcnseg's integer networks
// never compute with it.
#ifndef FCNSEG_HLS_HALF_H
#define FCNSEG_HLS_HALF_H
#ifndef _HLS_HALF_DEFINED_
#define _HLS_HALF_DEFINED_
typedef _Float16 half;
#endif
#endif
