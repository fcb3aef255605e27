// fcnseg stand-in for Vitis HLS's ap_axi_sdata.h (C simulation only; Vitis is not installed here).
//
// finn-hlslib's streamtools.h names qdma_axis in two Vitis-stream adapters
// (Qdma2Stream_Batch/Stream2Qdma_Batch) that no finn node instantiates; the type must exist for
// the header to parse. Data, keep and last with Vitis's accessors, nothing more.
#ifndef FCNSEG_AP_AXI_SDATA_H
#define FCNSEG_AP_AXI_SDATA_H
#include <ap_int.h>

template <int D, int U, int TI, int TD>
struct qdma_axis {
  ap_uint<D> data;
  ap_uint<(D + 7) / 8> keep;
  ap_uint<1> last;
  ap_uint<D> get_data() const { return data; }
  void set_data(ap_uint<D> const &d) { data = d; }
  void set_keep(ap_uint<(D + 7) / 8> const &k) { keep = k; }
  void set_last(ap_uint<1> const &l) { last = l; }
};
#endif
