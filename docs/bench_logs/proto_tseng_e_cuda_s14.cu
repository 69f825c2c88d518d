// Session 14 experiment record (not built by the package): Quartet's backward E along N (Tseng 3/4 RTN, random-sign
// Hadamard-32) as a hand-written CUDA kernel, one 32-element group per thread, to count its SASS against the Triton kernel's:
//   nvcc -arch=sm_90 -cubin -O3 -o k.cubin proto_tseng_e_cuda_s14.cu; then fp4compile.kernels.instruction_count.opcodes(k.cubin)
// 26.5 instructions per element (48 registers) against the Triton kernel's 25.8: docs/perf_notes.md, session 14.
#include <cuda_bf16.h>
#include <stdint.h>

#define RSQRT32 0.17677669529663687f  // RN_float32(1 / sqrt(32)), the reference's rotation scale

extern "C" __global__ void __launch_bounds__(256) tseng_e_rtn_h32(
    const __nv_bfloat16* __restrict__ e, int ld, int T, int N, uint32_t signs,
    uint4* __restrict__ codes, uint8_t* __restrict__ scales, int* __restrict__ row_exp)
{
    const int groups_per_row = N >> 5;
    const long g = (long)blockIdx.x * blockDim.x + threadIdx.x;  // this thread's group
    const int row = (int)(g / groups_per_row);
    const int gc = (int)(g - (long)row * groups_per_row);
    const bool ok = row < T;
    float x[32];
    const uint4* src = reinterpret_cast<const uint4*>(e + (long)row * ld + gc * 32);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        uint4 w = ok ? __ldg(src + i) : make_uint4(0, 0, 0, 0);
        uint32_t ws[4] = {w.x, w.y, w.z, w.w};
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int c = i * 8 + j * 2;  // x D: the random signs as sign-bit flips
            x[c] = __uint_as_float((ws[j] << 16) ^ ((signs << (31 - c)) & 0x80000000u));
            x[c + 1] = __uint_as_float((ws[j] & 0xFFFF0000u) ^ ((signs << (30 - c)) & 0x80000000u));
        }
    }
#pragma unroll
    for (int h = 1; h < 32; h <<= 1) {  // (x D) H: the Sylvester butterfly, FP32 sums
#pragma unroll
        for (int i = 0; i < 32; ++i) {
            if ((i & h) == 0) {
                const float a = x[i], b = x[i + h];
                x[i] = a + b;
                x[i + h] = a - b;
            }
        }
    }
    uint32_t amax_bits = 0;  // |x| as integer bits: Inf and NaN above every finite value
#pragma unroll
    for (int i = 0; i < 32; ++i) amax_bits = max(amax_bits, __float_as_uint(x[i]) & 0x7FFFFFFFu);
    const bool bad = amax_bits >= 0x7F800000u;
    const float amax = __uint_as_float(amax_bits) * RSQRT32;
    int ex = (int)((__float_as_uint(amax) >> 23) & 0xFF) - 129;  // floor(log2 amax) - 2
    ex = amax < 1.1754943508222875e-38f ? -129 : ex;
    ex = min(max(ex, -127), 127);
    const float inv = __uint_as_float((uint32_t)(127 - ex) << 23) * (0.75f * RSQRT32);  // 0.75 * 2^-e / sqrt(32)
    uint32_t words[4] = {0, 0, 0, 0};
#pragma unroll
    for (int i = 0; i < 32; ++i) {
        const float v = x[i] * inv;
        const float mag = fminf(fabsf(v), 6.0f);
        const int m = max((int)(__float_as_uint(mag) >> 23), 127);
        const uint32_t magic_bits = (uint32_t)m * 8388608u + 0x0B400000u;
        const float y = mag + __uint_as_float(magic_bits);
        // code = bits(y) - magic_bits + 2 (m - 127) = bits(y) - m (2^23 - 2) - (0x0B400000 + 254): one IMAD and an add
        uint32_t c = __float_as_uint(y) - (uint32_t)m * 8388606u - (0x0B400000u + 254u);
        const int p = 4 * (i & 7);
        words[i >> 3] |= (c << p) | ((__float_as_uint(v) >> (28 - p)) & (8u << p));
    }
    if (ok) {
        codes[g] = bad ? make_uint4(0x77777777u, 0x77777777u, 0x77777777u, 0x77777777u) : make_uint4(words[0], words[1], words[2], words[3]);
        scales[g] = bad ? 255 : (uint8_t)(ex + 127);
    }
    const int live = (ok && !bad && ex > -127 && amax > 0.0f) ? ex : -1000;
    const int row_max = __reduce_max_sync(0xFFFFFFFFu, live);  // groups_per_row a multiple of 32: one row per warp
    if ((threadIdx.x & 31) == 0 && row_max > -1000) atomicMax(row_exp + row, row_max);
}
