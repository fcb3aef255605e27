// fcnseg stand-in for Vitis HLS's hls_vector.h (C simulation only; Vitis is not installed here).
//
// hls::vector<T, N>: N values of T, indexable, compared element-wise, with the element-wise
// arithmetic Vitis defines. finn-plus's npy2vectorstream.hpp and finn-hlslib's flatten.hpp use it
// for the streams of finn's `cpp_interface="hls_vector"` nodes.
#ifndef FCNSEG_HLS_VECTOR_H
#define FCNSEG_HLS_VECTOR_H

#include <cstddef>
#include <initializer_list>

namespace hls {

template <typename T, std::size_t N>
class vector {
  T data_[N];

 public:
  vector() : data_() {}
  vector(T const &value) {  // NOLINT: Vitis broadcasts a scalar implicitly
    for (std::size_t i = 0; i < N; i++) data_[i] = value;
  }
  vector(std::initializer_list<T> values) : data_() {
    std::size_t i = 0;
    for (T const &v : values) {
      if (i < N) data_[i++] = v;
    }
  }

  static constexpr std::size_t size() { return N; }
  T &operator[](std::size_t i) { return data_[i]; }
  T const &operator[](std::size_t i) const { return data_[i]; }

  bool operator==(vector const &other) const {
    for (std::size_t i = 0; i < N; i++) {
      if (!(data_[i] == other.data_[i])) return false;
    }
    return true;
  }
  bool operator!=(vector const &other) const { return !(*this == other); }

#define FCNSEG_VECTOR_OP(op)                                                    \
  vector &operator op##=(vector const &rhs) {                                   \
    for (std::size_t i = 0; i < N; i++) data_[i] = data_[i] op rhs.data_[i];    \
    return *this;                                                               \
  }                                                                             \
  friend vector operator op(vector lhs, vector const &rhs) { return lhs op## = rhs; }
  FCNSEG_VECTOR_OP(+)
  FCNSEG_VECTOR_OP(-)
  FCNSEG_VECTOR_OP(*)
  FCNSEG_VECTOR_OP(/)
#undef FCNSEG_VECTOR_OP
};

}  // namespace hls

#endif
