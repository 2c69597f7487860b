// Small image container and the elementary operations of Coarse2Fine optical flow.
//
// Images are row-major and channel-interleaved: element (i, j, c) is at (i * W + j) * C + c, which is
// numpy's (H, W, C) C order. Every operation evaluates its arithmetic in the order described in
// shared/reference/pyflow-algorithm.md so that results match the reference to rounding level.
#pragma once

#include <cstddef>
#include <vector>

namespace c2f {

struct Image {
    int H = 0, W = 0, C = 0;
    std::vector<double> data;

    Image() = default;
    Image(int h, int w, int c) : H(h), W(w), C(c), data(static_cast<std::size_t>(h) * w * c, 0.0) {}
    void resize(int h, int w, int c) {
        H = h;
        W = w;
        C = c;
        data.assign(static_cast<std::size_t>(h) * w * c, 0.0);
    }
    std::size_t pixels() const { return static_cast<std::size_t>(H) * W; }
    double* ptr() { return data.data(); }
    const double* ptr() const { return data.data(); }
};

// Five-point derivative [1, -8, 0, 8, -1] / 12 (correlation: (g[j-2] - 8 g[j-1] + 8 g[j+1] - g[j+2]) / 12).
inline constexpr double kDeriv5[5] = {1.0 / 12, -8.0 / 12, 0.0, 8.0 / 12, -1.0 / 12};

inline int clamp_index(int k, int n) { return k < 0 ? 0 : (k >= n ? n - 1 : k); }

// 1-D correlation along rows (horizontal) or columns (vertical) with a replicated border:
// out[., j] = sum_{l=-r..r} h[l + r] * in[., clamp(j + l)], accumulated for l = -r..r.
void filter_horizontal(const Image& in, Image& out, const double* h, int r);
void filter_vertical(const Image& in, Image& out, const double* h, int r);
// Separable 2-D filter: horizontal pass into tmp, then vertical pass into out.
void filter_separable(const Image& in, Image& out, Image& tmp, const double* h, int r);

// Normalised Gaussian taps for radius r = trunc(3 * sigma); returns r and fills taps (size 2r + 1).
int gaussian_kernel(double sigma, std::vector<double>& taps);

// Bilinear resampling (clamped corners) of src to dst size; destination (i, j) samples the source
// at x = (j + 1) / sx - 1, y = (i + 1) / sy - 1.
void resample_bilinear(const Image& src, Image& dst, int dstH, int dstW, double sx, double sy);

// Bilinear sample of all channels of img at real (x, y) into out (clamped corners).
inline void bilinear_sample(const Image& img, double x, double y, double* out) {
    const int W = img.W, H = img.H, C = img.C;
    const int x0 = static_cast<int>(x), y0 = static_cast<int>(y);
    double fx = x - x0, fy = y - y0;
    fx = fx < 0 ? 0 : (fx > 1 ? 1 : fx);
    fy = fy < 0 ? 0 : (fy > 1 ? 1 : fy);
    const double wxs[2] = {1 - fx, fx};
    const double wys[2] = {1 - fy, fy};
    for (int c = 0; c < C; ++c) out[c] = 0;
    for (int m = 0; m < 2; ++m) {
        const int xx = clamp_index(x0 + m, W);
        for (int n = 0; n < 2; ++n) {
            const int yy = clamp_index(y0 + n, H);
            const double s = wxs[m] * wys[n];
            const double* p = img.ptr() + (static_cast<std::size_t>(yy) * W + xx) * C;
            for (int c = 0; c < C; ++c) out[c] += p[c] * s;
        }
    }
}

}  // namespace c2f
