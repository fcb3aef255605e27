// fcnseg test-bench glue: a repeated weight stream packed once (C simulation only).
//
// finn's cppsim main for an MVAU in internal_decoupled mode fills the weight stream with
//   npy2apintstream<P, E, float>("input_1.npy", in1_V, false, numReps);
// which converts and packs every weight again for each of the numReps repetitions: on the
// shipped FCN-8s that is ~45% of the run of a wide MVAU. This does the same through finn-plus's
// own npy2apintstream, once, and writes the packed words numReps times: the same words in the
// same order. It feeds the design under test; on the FPGA the weights come from finn-rtllib's
// memstream instead, so nothing of the hardware is replaced. hls.py substitutes the call.
#ifndef FCNSEG_REPEAT_STREAM_HPP
#define FCNSEG_REPEAT_STREAM_HPP

#include <cstddef>
#include <vector>

#include <hls_stream.h>

#include "npy2apintstream.hpp"

template <typename PackedT, typename ElemT, typename NpyT>
void fcnseg_npy2apintstream_repeated(char const *npy_path, hls::stream<PackedT> &out_stream,
                                     bool reverse_inner = true, std::size_t numReps = 1) {
  hls::stream<PackedT> once("fcnseg_once");
  npy2apintstream<PackedT, ElemT, NpyT>(npy_path, once, reverse_inner, 1);
  std::vector<PackedT> words;
  words.reserve(once.size());
  while (!once.empty()) words.push_back(once.read());
  for (std::size_t rep = 0; rep < numReps; rep++) {
    for (PackedT const &word : words) out_stream.write(word);
  }
}

#endif
