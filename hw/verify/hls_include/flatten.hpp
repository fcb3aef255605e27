// fcnseg glue over finn-hlslib's flatten.hpp (found next on the include path).
//
// finn-plus 1.6.1's npy2apintstream.hpp (the input/output glue of every cppsim executable, not
// the compute) calls unflatten(buffer, word), the inverse of flatten(), which finn-hlslib
// releases before the commit finn-plus pins do not define. When the library in use lacks it, the
// build defines FCNSEG_UNFLATTEN_GLUE and this file supplies it for ap_int/ap_uint elements: the
// N fields of W bits of the packed word, lowest first, as flatten() lays them out.
#include_next <flatten.hpp>

#if defined(FCNSEG_UNFLATTEN_GLUE) && !defined(FCNSEG_UNFLATTEN_DEFINED)
#define FCNSEG_UNFLATTEN_DEFINED
template <typename T, std::size_t N>
void unflatten(T (&buffer)[N], ap_uint<N * width_v<T>> const &word) {
  constexpr std::size_t W = width_v<T>;
  static_assert(W == T::width, "fcnseg's unflatten glue handles ap_int/ap_uint elements only");
  for (std::size_t j = 0; j < N; j++) {
    buffer[j] = T(ap_uint<W>(word((j + 1) * W - 1, j * W)));
  }
}
#endif
