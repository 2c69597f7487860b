// Single-plane (one channel, H x W, row-major) 1-D correlation filters with a replicated border.
//
// The solver keeps its multi-channel images planar (channel c at c * H * W) so that these loops vectorise.
// Each output is h[0] * in[l = -R] + h[1] * in[l = -R + 1] + ..., summed left to right: the same rounding as
// accumulating from zero in the order l = -R..R.
#pragma once

#include <cmath>
#include <cstddef>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "image.h"

namespace c2f {

template <int R>
inline void hfilter_plane(const double* in, double* out, int H, int W, const double* h) {
    for (int i = 0; i < H; ++i) {
        const double* r = in + static_cast<std::size_t>(i) * W;
        double* o = out + static_cast<std::size_t>(i) * W;
        const int lo = R < W ? R : W, hi = W - R > lo ? W - R : lo;
        for (int j = 0; j < lo; ++j) {
            double s = 0;
            for (int t = 0; t <= 2 * R; ++t) s += h[t] * r[clamp_index(j + t - R, W)];
            o[j] = s;
        }
        for (int j = lo; j < hi; ++j) {
            double s = h[0] * r[j - R];
            for (int t = 1; t <= 2 * R; ++t) s += h[t] * r[j + t - R];
            o[j] = s;
        }
        for (int j = hi; j < W; ++j) {
            double s = 0;
            for (int t = 0; t <= 2 * R; ++t) s += h[t] * r[clamp_index(j + t - R, W)];
            o[j] = s;
        }
    }
}

template <int R>
inline void vfilter_plane(const double* in, double* out, int H, int W, const double* h) {
    for (int i = 0; i < H; ++i) {
        const double* rows[2 * R + 1];
        for (int t = 0; t <= 2 * R; ++t) rows[t] = in + static_cast<std::size_t>(clamp_index(i + t - R, H)) * W;
        double* o = out + static_cast<std::size_t>(i) * W;
        for (int j = 0; j < W; ++j) {
            double s = h[0] * rows[0][j];
            for (int t = 1; t <= 2 * R; ++t) s += h[t] * rows[t][j];
            o[j] = s;
        }
    }
}

// Separable filter of all C planes: horizontal into tmp (one plane), then vertical into out.
template <int R>
inline void smooth_planes(const double* in, double* out, double* tmp, int H, int W, int C, const double* h) {
    const std::size_t N = static_cast<std::size_t>(H) * W;
    for (int c = 0; c < C; ++c) {
        hfilter_plane<R>(in + c * N, tmp, H, W, h);
        vfilter_plane<R>(tmp, out + c * N, H, W, h);
    }
}

// out[k] = 0.5 / sqrt(x[k] + eps) (the Charbonnier weight). Explicit SSE2 because std::sqrt's errno handling
// keeps the compiler from vectorising; packed and scalar sqrt/div round identically (IEEE 754).
inline void charbonnier_weight(const double* x, double* out, std::size_t n, double eps) {
    std::size_t k = 0;
#if defined(__SSE2__)
    const __m128d half = _mm_set1_pd(0.5), e = _mm_set1_pd(eps);
    for (; k + 2 <= n; k += 2)
        _mm_storeu_pd(out + k, _mm_div_pd(half, _mm_sqrt_pd(_mm_add_pd(_mm_loadu_pd(x + k), e))));
#endif
    for (; k < n; ++k) out[k] = 0.5 / std::sqrt(x[k] + eps);
}

}  // namespace c2f
