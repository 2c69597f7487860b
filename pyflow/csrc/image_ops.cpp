// Elementary image operations: 1-D correlation filters, Gaussian taps, bilinear resampling.
#include <cmath>

#include "image.h"

namespace c2f {

void filter_horizontal(const Image& in, Image& out, const double* h, int r) {
    const int H = in.H, W = in.W, C = in.C;
    if (out.H != H || out.W != W || out.C != C) out.resize(H, W, C);
    const double* src = in.ptr();
    double* dst = out.ptr();
    const int taps = 2 * r + 1;
    for (int i = 0; i < H; ++i) {
        const double* row = src + static_cast<std::size_t>(i) * W * C;
        double* orow = dst + static_cast<std::size_t>(i) * W * C;
        for (int j = 0; j < W; ++j) {
            double* o = orow + static_cast<std::size_t>(j) * C;
            for (int c = 0; c < C; ++c) o[c] = 0;
            if (j >= r && j + r < W) {
                const double* p = row + static_cast<std::size_t>(j - r) * C;
                for (int t = 0; t < taps; ++t) {
                    const double ht = h[t];
                    for (int c = 0; c < C; ++c) o[c] += ht * p[t * C + c];
                }
            } else {
                for (int t = 0; t < taps; ++t) {
                    const double ht = h[t];
                    const double* p = row + static_cast<std::size_t>(clamp_index(j + t - r, W)) * C;
                    for (int c = 0; c < C; ++c) o[c] += ht * p[c];
                }
            }
        }
    }
}

void filter_vertical(const Image& in, Image& out, const double* h, int r) {
    const int H = in.H, W = in.W, C = in.C;
    if (out.H != H || out.W != W || out.C != C) out.resize(H, W, C);
    const std::size_t rowlen = static_cast<std::size_t>(W) * C;
    const double* src = in.ptr();
    double* dst = out.ptr();
    const int taps = 2 * r + 1;
    for (int i = 0; i < H; ++i) {
        double* o = dst + static_cast<std::size_t>(i) * rowlen;
        for (std::size_t k = 0; k < rowlen; ++k) o[k] = 0;
        // Rows are accumulated tap by tap: the per-element order is still l = -r..r.
        for (int t = 0; t < taps; ++t) {
            const double ht = h[t];
            const double* p = src + static_cast<std::size_t>(clamp_index(i + t - r, H)) * rowlen;
            for (std::size_t k = 0; k < rowlen; ++k) o[k] += ht * p[k];
        }
    }
}

void filter_separable(const Image& in, Image& out, Image& tmp, const double* h, int r) {
    filter_horizontal(in, tmp, h, r);
    filter_vertical(tmp, out, h, r);
}

int gaussian_kernel(double sigma, std::vector<double>& taps) {
    const int r = static_cast<int>(sigma * 3);
    taps.assign(2 * r + 1, 0.0);
    double sum = 0;
    for (int l = -r; l <= r; ++l) {
        taps[l + r] = std::exp(-static_cast<double>(l * l) / (2 * sigma * sigma));
        sum += taps[l + r];
    }
    for (double& t : taps) t /= sum;
    return r;
}

void resample_bilinear(const Image& src, Image& dst, int dstH, int dstW, double sx, double sy) {
    dst.resize(dstH, dstW, src.C);
    const int C = src.C;
    for (int i = 0; i < dstH; ++i) {
        const double y = (i + 1) / sy - 1;
        for (int j = 0; j < dstW; ++j) {
            const double x = (j + 1) / sx - 1;
            bilinear_sample(src, x, y, dst.ptr() + (static_cast<std::size_t>(i) * dstW + j) * C);
        }
    }
}

}  // namespace c2f
