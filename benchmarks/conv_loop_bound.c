/* How close the 9-tap conv loop comes to the CPU's multiply-add peak, outside Numba.

   1. peak: 12 independent chains of fused multiply-adds on registers (no memory), 512- and 256-bit.
   2. conv: the loop of minicnn/fast/block.py's _conv_quarters (the paper's conv: 8 filters x 3
      channels, 16 pooled rows of 16 columns), written in C with restrict pointers and aligned rows.

   (2) against (1) says how far the loop's shape keeps it from the peak; (2) against the Numba kernel
   (README, "What limits it") says what Numba's code costs on top.

       gcc -O3 -march=native -mprefer-vector-width=512 -ffp-contract=fast \
           -o /tmp/conv_loop_bound benchmarks/conv_loop_bound.c && /tmp/conv_loop_bound

   (x86-64 with AVX-512 only.) Figures are float multiply-adds per second ("lane-FMA/s"). */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* 12 independent chains written out, so that the compiler keeps all of them in registers */
#define CHAINS(T, FMA, A, M, C)                                                                   \
    A##0 = FMA(A##0, M, C); A##1 = FMA(A##1, M, C); A##2 = FMA(A##2, M, C); A##3 = FMA(A##3, M, C); \
    A##4 = FMA(A##4, M, C); A##5 = FMA(A##5, M, C); A##6 = FMA(A##6, M, C); A##7 = FMA(A##7, M, C); \
    A##8 = FMA(A##8, M, C); A##9 = FMA(A##9, M, C); A##10 = FMA(A##10, M, C); A##11 = FMA(A##11, M, C);

__attribute__((optimize("O2"))) static void peak(void) {  /* -O3 interleaves the chains worse */
    const long n = 200000000;
    __m512 m = _mm512_set1_ps(0.999999f), c = _mm512_set1_ps(1e-7f);
    __m512 a0 = _mm512_set1_ps(1.0f), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0, a8 = a0,
           a9 = a0, a10 = a0, a11 = a0;
    double t = now();
    for (long i = 0; i < n; i++) { CHAINS(__m512, _mm512_fmadd_ps, a, m, c) }
    double d = now() - t;
    __m512 s = _mm512_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)),
                             _mm512_add_ps(_mm512_add_ps(a4, a5), _mm512_add_ps(a6, a7)));
    s = _mm512_add_ps(s, _mm512_add_ps(_mm512_add_ps(a8, a9), _mm512_add_ps(a10, a11)));
    printf("peak, 512-bit: %.1f G lane-FMA/s  (%.0f)\n", 16 * 12.0 * n / d / 1e9, _mm512_reduce_add_ps(s));

    __m256 m2 = _mm256_set1_ps(0.999999f), c2 = _mm256_set1_ps(1e-7f);
    __m256 b0 = _mm256_set1_ps(1.0f), b1 = b0, b2 = b0, b3 = b0, b4 = b0, b5 = b0, b6 = b0, b7 = b0, b8 = b0,
           b9 = b0, b10 = b0, b11 = b0;
    t = now();
    for (long i = 0; i < n; i++) { CHAINS(__m256, _mm256_fmadd_ps, b, m2, c2) }
    d = now() - t;
    __m256 s2 = _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(b0, b1), _mm256_add_ps(b2, b3)),
                              _mm256_add_ps(_mm256_add_ps(b4, b5), _mm256_add_ps(b6, b7)));
    s2 = _mm256_add_ps(s2, _mm256_add_ps(_mm256_add_ps(b8, b9), _mm256_add_ps(b10, b11)));
    float out[8];
    _mm256_storeu_ps(out, s2);
    printf("peak, 256-bit: %.1f G lane-FMA/s  (%.0f)\n", 8 * 12.0 * n / d / 1e9, out[0]);
}

#define SPAN 256       /* 16 pooled rows x 16 columns (the Numba kernel has one junk column: 272) */
#define WH 16          /* quarter-plane row length */
#define PLANE (SPAN + 4 * WH)
static float planes[2][2][3][PLANE] __attribute__((aligned(64)));
static float conv[2][2][SPAN] __attribute__((aligned(64)));
static float w[8][3][9];

__attribute__((noinline)) static void conv_passes(int reps) {
    for (int r = 0; r < reps; r++)
        for (int f = 0; f < 8; f++)
            for (int c = 0; c < 3; c++) {
                /* v<R><C>: padded pixel (2yy + R, 2u + C) at q, as in _conv_quarters */
                const float *restrict v00 = planes[0][0][c], *restrict v01 = planes[0][1][c];
                const float *restrict v02 = planes[0][0][c] + 1, *restrict v03 = planes[0][1][c] + 1;
                const float *restrict v10 = planes[1][0][c], *restrict v11 = planes[1][1][c];
                const float *restrict v12 = planes[1][0][c] + 1, *restrict v13 = planes[1][1][c] + 1;
                const float *restrict v20 = planes[0][0][c] + WH, *restrict v21 = planes[0][1][c] + WH;
                const float *restrict v22 = planes[0][0][c] + WH + 1, *restrict v23 = planes[0][1][c] + WH + 1;
                const float *restrict v30 = planes[1][0][c] + WH, *restrict v31 = planes[1][1][c] + WH;
                const float *restrict v32 = planes[1][0][c] + WH + 1, *restrict v33 = planes[1][1][c] + WH + 1;
                float *restrict c00 = conv[0][0], *restrict c01 = conv[0][1];
                float *restrict c10 = conv[1][0], *restrict c11 = conv[1][1];
                const float *k = w[f][c];
                for (int q = 0; q < SPAN; q++) {
                    float p00 = v00[q], p01 = v01[q], p02 = v02[q], p03 = v03[q];
                    float p10 = v10[q], p11 = v11[q], p12 = v12[q], p13 = v13[q];
                    float p20 = v20[q], p21 = v21[q], p22 = v22[q], p23 = v23[q];
                    float p30 = v30[q], p31 = v31[q], p32 = v32[q], p33 = v33[q];
                    c00[q] += k[0] * p00 + k[1] * p01 + k[2] * p02 + k[3] * p10 + k[4] * p11 + k[5] * p12
                              + k[6] * p20 + k[7] * p21 + k[8] * p22;
                    c01[q] += k[0] * p01 + k[1] * p02 + k[2] * p03 + k[3] * p11 + k[4] * p12 + k[5] * p13
                              + k[6] * p21 + k[7] * p22 + k[8] * p23;
                    c10[q] += k[0] * p10 + k[1] * p11 + k[2] * p12 + k[3] * p20 + k[4] * p21 + k[5] * p22
                              + k[6] * p30 + k[7] * p31 + k[8] * p32;
                    c11[q] += k[0] * p11 + k[1] * p12 + k[2] * p13 + k[3] * p21 + k[4] * p22 + k[5] * p23
                              + k[6] * p31 + k[7] * p32 + k[8] * p33;
                }
            }
}

int main(void) {
    peak();
    for (int i = 0; i < 8 * 3 * 9; i++) ((float *)w)[i] = 0.01f * (i % 7);
    for (int i = 0; i < 2 * 2 * 3 * PLANE; i++) ((float *)planes)[i] = 0.001f * (i % 13);
    const int reps = 20000;
    conv_passes(10);
    double t = now();
    conv_passes(reps);
    double d = now() - t;
    printf("9-tap conv loop: %.2f us per image, %.1f G lane-FMA/s  (%.3f)\n", d / reps * 1e6,
           8.0 * 3 * SPAN * 36 * reps / d / 1e9, conv[0][0][5]);
    return 0;
}
