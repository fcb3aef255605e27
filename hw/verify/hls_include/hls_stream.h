// fcnseg stand-in for Vitis HLS's hls_stream.h (C simulation only; Vitis is not installed here).
//
// hls::stream<T, DEPTH> as an unbounded FIFO with the calls finn's generated code and finn-hlslib
// make. Unlike Vitis's C simulation, which warns and returns a default value when a stream is
// read empty, a blocking read of an empty stream prints the stream's name and exits with status
// 3: a design that reads more than it was given must fail loudly, never compute on zeros. A stream
// destroyed while still holding values exits with status 4 for the same reason (the design read
// less than it was given, or an output was never drained).
#ifndef FCNSEG_HLS_STREAM_H
#define FCNSEG_HLS_STREAM_H

#include <cstdio>
#include <cstdlib>
#include <deque>
#include <string>

namespace hls {

template <typename T, int DEPTH = 0>
class stream {
  std::deque<T> fifo_;
  std::string name_;

  [[noreturn]] void fail(char const *what, int status) const {
    std::fprintf(stderr, "hls::stream '%s': %s\n", name_.c_str(), what);
    std::fflush(stdout);
    std::fflush(stderr);
    std::_Exit(status);
  }

 public:
  stream() : name_("unnamed") {}
  explicit stream(char const *name) : name_(name) {}
  stream(stream const &) = delete;
  stream &operator=(stream const &) = delete;
  ~stream() {
    if (!fifo_.empty()) {
      std::string what = "destroyed holding " + std::to_string(fifo_.size()) + " unread values";
      fail(what.c_str(), 4);
    }
  }

  bool empty() const { return fifo_.empty(); }
  bool full() const { return false; }
  std::size_t size() const { return fifo_.size(); }

  T read() {
    if (fifo_.empty()) fail("read while empty (the design read more than it was given)", 3);
    T value = fifo_.front();
    fifo_.pop_front();
    return value;
  }
  void read(T &value) { value = read(); }
  bool read_nb(T &value) {
    if (fifo_.empty()) return false;
    value = read();
    return true;
  }
  void operator>>(T &value) { value = read(); }

  void write(T const &value) { fifo_.push_back(value); }
  bool write_nb(T const &value) {
    write(value);
    return true;
  }
  void operator<<(T const &value) { write(value); }
};

}  // namespace hls

#endif
