// fcnseg's generic AXI-stream harness for one Verilated finn node (or any top with AXI streams).
//
// Built once per design by fcnseg.hw.verify.verilator, next to a generated "fcnseg_ports.h" that
// names the Verilated top class, its clock/reset and its streams (read from the Verilated header,
// see verilator.py). The harness holds no design knowledge of its own: it resets the design,
// drives every slave stream (s_axis: TDATA/TVALID, reading TREADY) from its words, keeps every
// master stream (m_axis) ready and collects its words until each has its expected count, and
// reports the clock cycles that took. Inputs that are no stream (AXI-lite, ap_none) stay 0.
//
// Protocol (all integers little-endian, one process per data pass, no state between passes):
//   stdin : "FCNSIM02", u32 reset_cycles, u64 liveness_cycles,
//           per slave stream in FCNSEG_IN_STREAMS order: u64 n, u64 repeats, n words of
//           BYTES(width) each (the stream sends its n words `repeats` times over: an MVAU's
//           weights, once per input vector, without n * repeats words on the pipe),
//           per master stream in FCNSEG_OUT_STREAMS order: u64 expected word count.
//   stdout: "FCNSIM02", u64 cycles, u8 status (0: complete, 1: liveness timeout),
//           per master stream: u64 n, n words of BYTES(width) each,
//           per slave stream: u64 words it accepted (n * repeats when the design read all).
//   stderr: one line per problem; exit code 2 on a malformed request. The design's own output
//           ($display, Verilator messages) is sent to stderr too: the harness moves stdout there
//           before the model is built and writes the reply to the original stdout.
// A transfer happens on a rising clock edge where TVALID and TREADY were both high before it,
// as in AXI4-Stream. Cycles count rising edges from the first one after reset up to the one
// that transferred the last expected output word. A master stream that goes liveness_cycles
// edges without producing a word while it still owes words ends the pass with status 1.
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <unistd.h>
#include <vector>

#include "fcnseg_ports.h"
#include "verilated.h"

static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the stream protocol is little-endian");

namespace {

constexpr const char kMagic[9] = "FCNSIM02";
constexpr size_t bytes_of(int bits) { return static_cast<size_t>((bits + 7) / 8); }

// Port access for every Verilator storage type: C/S/I/QData integers and VlWide<N> arrays.
template <typename T>
void put(T& port, const uint8_t* src, size_t n) {
    T v = 0;
    std::memcpy(&v, src, n < sizeof(T) ? n : sizeof(T));
    port = v;
}
template <std::size_t N>
void put(VlWide<N>& port, const uint8_t* src, size_t n) {
    EData words[N] = {};
    std::memcpy(words, src, n < sizeof(words) ? n : sizeof(words));
    for (std::size_t i = 0; i < N; ++i) port[i] = words[i];
}
template <typename T>
void get(const T& port, uint8_t* dst, size_t n) {
    T v = port;
    std::memset(dst, 0, n);
    std::memcpy(dst, &v, n < sizeof(T) ? n : sizeof(T));
}
template <std::size_t N>
void get(const VlWide<N>& port, uint8_t* dst, size_t n) {
    EData words[N];
    for (std::size_t i = 0; i < N; ++i) words[i] = port[i];
    std::memset(dst, 0, n);
    std::memcpy(dst, words, n < sizeof(words) ? n : sizeof(words));
}

struct Reader {
    std::vector<uint8_t> buf;
    size_t pos = 0;
    bool ok = true;
    void take(void* dst, size_t n) {
        if (pos + n > buf.size()) {
            ok = false;
            return;
        }
        std::memcpy(dst, buf.data() + pos, n);
        pos += n;
    }
    template <typename T>
    T num() {
        T v = 0;
        take(&v, sizeof(T));
        return v;
    }
};

// One stream's words and progress: `words` holds n * width_bytes bytes.
struct Stream {
    const char* name;
    size_t width_bytes;
    uint64_t count = 0;  // words to send (slave: n * repeats) or expected (master)
    uint64_t done = 0;   // words transferred so far
    uint64_t n = 0;      // slave: distinct words held (word k goes out as words[k % n])
    uint64_t idle = 0;   // master: edges since the last transferred word
    std::vector<uint8_t> words;
};

std::vector<uint8_t> read_all_stdin() {
    std::vector<uint8_t> data;
    uint8_t chunk[1 << 16];
    size_t n;
    while ((n = std::fread(chunk, 1, sizeof(chunk), stdin)) > 0) data.insert(data.end(), chunk, chunk + n);
    return data;
}

FILE* g_reply = nullptr;  // the original stdout, where the reply goes
void write(const void* src, size_t n) { std::fwrite(src, 1, n, g_reply); }

}  // namespace

int main(int argc, char** argv) {
    std::fflush(stdout);
    g_reply = fdopen(dup(STDOUT_FILENO), "wb");
    if (g_reply == nullptr || dup2(STDERR_FILENO, STDOUT_FILENO) < 0) {
        std::cerr << "axis_harness: cannot set up the reply channel" << std::endl;
        return 2;
    }
    auto context = std::make_unique<VerilatedContext>();
    context->randReset(0);  // every register and undriven input starts at 0, run to run
    context->commandArgs(argc, argv);
    auto top = std::make_unique<FCNSEG_TOP>(context.get());

    Reader in;
    in.buf = read_all_stdin();
    char magic[8];
    in.take(magic, 8);
    const auto reset_cycles = in.num<uint32_t>();
    const auto liveness = in.num<uint64_t>();
    std::vector<Stream> ins, outs;
#define FCNSEG_IN(name, bits) ins.push_back(Stream{#name, bytes_of(bits)});
#define FCNSEG_OUT(name, bits) outs.push_back(Stream{#name, bytes_of(bits)});
    FCNSEG_IN_STREAMS(FCNSEG_IN)
    FCNSEG_OUT_STREAMS(FCNSEG_OUT)
    for (auto& s : ins) {
        s.n = in.num<uint64_t>();
        const auto repeats = in.num<uint64_t>();
        if (!in.ok || s.n > (in.buf.size() - in.pos) / s.width_bytes ||
            (s.n > 0 && repeats > UINT64_MAX / s.n)) {
            in.ok = false;
            break;
        }
        s.count = s.n * repeats;
        s.words.resize(s.n * s.width_bytes);
        in.take(s.words.data(), s.words.size());
    }
    for (auto& s : outs) {
        s.count = in.num<uint64_t>();
        s.words.resize(s.count * s.width_bytes);
    }
    if (!in.ok || std::memcmp(magic, kMagic, 8) != 0 || in.pos != in.buf.size()) {
        std::cerr << "axis_harness: malformed request on stdin" << std::endl;
        return 2;
    }

    // Reset: active-low reset held for reset_cycles edges, every stream idle.
    top->FCNSEG_RST_N = 0;
    top->FCNSEG_CLK = 0;
    top->eval();
    for (uint32_t i = 0; i < reset_cycles; ++i) {
        top->FCNSEG_CLK = 1;
        top->eval();
        top->FCNSEG_CLK = 0;
        top->eval();
    }
    top->FCNSEG_RST_N = 1;
    top->eval();

    uint64_t cycles = 0;
    uint8_t status = 0;
    auto owed = [&]() {
        for (const auto& s : outs)
            if (s.done < s.count) return true;
        return false;
    };
    while (owed()) {
        // Drive the values seen by the next rising edge, then sample the handshakes they give.
        size_t k = 0;
#define FCNSEG_DRIVE_IN(name, bits)                                                   \
    {                                                                                 \
        Stream& s = ins[k++];                                                         \
        const bool valid = s.done < s.count;                                          \
        top->name##_TVALID = valid;                                                   \
        if (valid) put(top->name##_TDATA, &s.words[(s.done % s.n) * s.width_bytes], s.width_bytes); \
    }
        FCNSEG_IN_STREAMS(FCNSEG_DRIVE_IN)
#define FCNSEG_DRIVE_OUT(name, bits) top->name##_TREADY = 1;
        FCNSEG_OUT_STREAMS(FCNSEG_DRIVE_OUT)
        top->eval();
        k = 0;
#define FCNSEG_SAMPLE_IN(name, bits)                                        \
    {                                                                       \
        Stream& s = ins[k++];                                               \
        if (top->name##_TVALID && top->name##_TREADY) ++s.done;             \
    }
        FCNSEG_IN_STREAMS(FCNSEG_SAMPLE_IN)
        k = 0;
#define FCNSEG_SAMPLE_OUT(name, bits)                                                     \
    {                                                                                     \
        Stream& s = outs[k++];                                                            \
        if (top->name##_TVALID && s.done < s.count) {                                     \
            get(top->name##_TDATA, &s.words[s.done * s.width_bytes], s.width_bytes);      \
            ++s.done;                                                                     \
            s.idle = 0;                                                                   \
        } else if (s.done < s.count) {                                                    \
            ++s.idle;                                                                     \
        }                                                                                 \
    }
        FCNSEG_OUT_STREAMS(FCNSEG_SAMPLE_OUT)
        top->FCNSEG_CLK = 1;
        top->eval();
        top->FCNSEG_CLK = 0;
        top->eval();
        ++cycles;
        bool stalled = false;
        for (const auto& s : outs) stalled = stalled || (s.done < s.count && s.idle >= liveness);
        if (stalled) {
            status = 1;
            break;
        }
    }
    top->final();

    write(kMagic, 8);
    write(&cycles, sizeof(cycles));
    write(&status, sizeof(status));
    for (const auto& s : outs) {
        write(&s.done, sizeof(s.done));
        write(s.words.data(), s.done * s.width_bytes);
    }
    for (const auto& s : ins) write(&s.done, sizeof(s.done));
    std::fflush(g_reply);
    return 0;
}
