// Coarse2Fine driver: pyramids, feature images, warps and the final bicubic warp (pyflow-algorithm.md 3.2-3.5, 3.8).
#include "coarse2fine.h"
#include "planar.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

namespace c2f {

namespace {

// Pyramid ratio actually used for the images (the reference silently replaces odd ratios by 0.75).
double pyramid_ratio(double ratio) { return (ratio > 0.98 || ratio < 0.4) ? 0.75 : ratio; }

int nominal_levels(int W, double pr, double minWidth) {
    const double L = std::log(minWidth / W) / std::log(pr);
    if (!(L >= 1)) return 1;  // also catches NaN; L = 0 would crash the reference
    if (L > 1000) return 1000;
    return static_cast<int>(L);
}

struct LevelSize {
    int H, W;
};

// Level sizes and how each level is made (see 3.2). Stops early if a level would have a zero size.
std::vector<LevelSize> level_sizes(int H0, int W0, double ratio, double minWidth) {
    const double pr = pyramid_ratio(ratio);
    const int L = nominal_levels(W0, pr, minWidth);
    const int n = static_cast<int>(std::log(0.25) / std::log(pr));
    std::vector<LevelSize> sizes{{H0, W0}};
    for (int i = 1; i < L; ++i) {
        int h, w;
        if (i <= n) {
            const double s = std::pow(pr, i);
            w = static_cast<int>(W0 * s);
            h = static_cast<int>(H0 * s);
        } else {
            const LevelSize& src = sizes[i - n];
            const double rate = std::pow(pr, i) * W0 / src.W;
            w = static_cast<int>(src.W * rate);
            h = static_cast<int>(src.H * rate);
        }
        if (w < 1 || h < 1) break;
        sizes.push_back({h, w});
    }
    return sizes;
}

void build_pyramid(const Image& img, double ratio, double minWidth, std::vector<Image>& pyr) {
    const double pr = pyramid_ratio(ratio);
    const std::vector<LevelSize> sizes = level_sizes(img.H, img.W, ratio, minWidth);
    const int n = static_cast<int>(std::log(0.25) / std::log(pr));
    const double sigma_b = 1 / pr - 1;
    const int W0 = img.W;
    pyr.assign(sizes.size(), Image());
    pyr[0] = img;
    Image smoothed, tmp;
    std::vector<double> taps;
    for (std::size_t i = 1; i < sizes.size(); ++i) {
        const int ii = static_cast<int>(i);
        const Image* src;
        double sigma, rate;
        if (ii <= n) {
            src = &img;
            sigma = sigma_b * ii;
            rate = std::pow(pr, ii);
        } else {
            src = &pyr[i - n];
            sigma = sigma_b * n;
            rate = std::pow(pr, ii) * W0 / src->W;
        }
        const int r = gaussian_kernel(sigma, taps);
        const Image* to_resample = src;
        if (r > 0) {
            filter_separable(*src, smoothed, tmp, taps.data(), r);
            to_resample = &smoothed;
        }
        resample_bilinear(*to_resample, pyr[i], sizes[i].H, sizes[i].W, rate, rate);
    }
}


// Feature image (3.3), planar: RGB -> [g, Dx g, Dy g, G - R, G - B]; gray -> [I, Dx I, Dy I];
// any other C -> the raw channels.
void features(const Image& P, bool bgr_weights, Image& F) {
    const int H = P.H, W = P.W, C = P.C;
    const std::size_t N = P.pixels();
    const double* p = P.ptr();
    if (C != 1 && C != 3) {
        F.resize(H, W, C);
        for (std::size_t k = 0; k < N; ++k)
            for (int c = 0; c < C; ++c) F.data[c * N + k] = p[k * C + c];
        return;
    }
    const int CF = C == 3 ? 5 : 3;
    F.resize(H, W, CF);
    double* g = F.ptr();
    if (C == 3) {
        const double w0 = bgr_weights ? 0.114 : 0.299;
        const double w2 = bgr_weights ? 0.299 : 0.114;
        for (std::size_t k = 0; k < N; ++k) g[k] = w0 * p[3 * k] + 0.587 * p[3 * k + 1] + w2 * p[3 * k + 2];
        for (std::size_t k = 0; k < N; ++k) {
            g[3 * N + k] = p[3 * k + 1] - p[3 * k];
            g[4 * N + k] = p[3 * k + 1] - p[3 * k + 2];
        }
    } else {
        std::memcpy(g, p, N * sizeof(double));
    }
    hfilter_plane<2>(g, g + N, H, W, kDeriv5);
    vfilter_plane<2>(g, g + 2 * N, H, W, kDeriv5);
}

// Final warp (3.8): bicubic Hermite interpolation of im2 using central-difference slopes; outside -> im1; clamp.
void warp_bicubic(const Image& im1, const Image& im2, const Image& u, const Image& v, double* out) {
    const int H = im2.H, W = im2.W, C = im2.C;
    const double half[3] = {-0.5, 0.0, 0.5};
    Image gx, gy, gxy;
    filter_horizontal(im2, gx, half, 1);
    filter_vertical(im2, gy, half, 1);
    filter_vertical(gx, gxy, half, 1);
    const double* f = im2.ptr();
    for (int i = 0; i < H; ++i) {
        for (int j = 0; j < W; ++j) {
            const std::size_t p = static_cast<std::size_t>(i) * W + j;
            const double x = j + u.data[p];
            const double y = i + v.data[p];
            double* o = out + p * C;
            if (x < 0 || x > W - 1 || y < 0 || y > H - 1) {
                for (int c = 0; c < C; ++c) o[c] = im1.data[p * C + c];
            } else {
                const int x0 = static_cast<int>(x), y0 = static_cast<int>(y);
                const int x1 = std::min(x0 + 1, W - 1), y1 = std::min(y0 + 1, H - 1);
                const double tx = x - x0, ty = y - y0;
                const double tx2 = tx * tx, tx3 = tx2 * tx, ty2 = ty * ty, ty3 = ty2 * ty;
                const double hx[4] = {2 * tx3 - 3 * tx2 + 1, -2 * tx3 + 3 * tx2, tx3 - 2 * tx2 + tx, tx3 - tx2};
                const double hy[4] = {2 * ty3 - 3 * ty2 + 1, -2 * ty3 + 3 * ty2, ty3 - 2 * ty2 + ty, ty3 - ty2};
                const std::size_t o00 = (static_cast<std::size_t>(y0) * W + x0) * C;
                const std::size_t o01 = (static_cast<std::size_t>(y1) * W + x0) * C;
                const std::size_t o10 = (static_cast<std::size_t>(y0) * W + x1) * C;
                const std::size_t o11 = (static_cast<std::size_t>(y1) * W + x1) * C;
                for (int c = 0; c < C; ++c) {
                    // G[a][b]: a = value at x0, x1, x-slope at x0, x1; b = value at y0, y1, y-slope at y0, y1.
                    const double G[4][4] = {
                        {f[o00 + c], f[o01 + c], gy.data[o00 + c], gy.data[o01 + c]},
                        {f[o10 + c], f[o11 + c], gy.data[o10 + c], gy.data[o11 + c]},
                        {gx.data[o00 + c], gx.data[o01 + c], gxy.data[o00 + c], gxy.data[o01 + c]},
                        {gx.data[o10 + c], gx.data[o11 + c], gxy.data[o10 + c], gxy.data[o11 + c]},
                    };
                    double s = 0;
                    for (int a = 0; a < 4; ++a)
                        for (int b = 0; b < 4; ++b) s += hx[a] * hy[b] * G[a][b];
                    o[c] = s;
                }
            }
            for (int c = 0; c < C; ++c) o[c] = o[c] < 0 ? 0 : (o[c] > 1 ? 1 : o[c]);
        }
    }
}

}  // namespace

int pyramid_levels(int H, int W, double ratio, double minWidth) {
    return static_cast<int>(level_sizes(H, W, ratio, minWidth).size());
}

void warp_bilinear_fallback(const Image& F1, const Image& F2, const Image& u, const Image& v, Image& out) {
    const int H = F2.H, W = F2.W, C = F2.C;
    const std::size_t N = F2.pixels();
    if (out.H != H || out.W != W || out.C != C) out.resize(H, W, C);
    const double* f1 = F1.ptr();
    const double* f2 = F2.ptr();
    double* o = out.ptr();
    for (int i = 0; i < H; ++i) {
        for (int j = 0; j < W; ++j) {
            const std::size_t p = static_cast<std::size_t>(i) * W + j;
            const double x = j + u.data[p];
            const double y = i + v.data[p];
            if (x < 0 || x > W - 1 || y < 0 || y > H - 1) {
                for (int c = 0; c < C; ++c) o[c * N + p] = f1[c * N + p];
                continue;
            }
            // Same sampling as bilinear_sample: corners in the order (x0, y0), (x0, y1), (x1, y0), (x1, y1).
            const int x0 = static_cast<int>(x), y0 = static_cast<int>(y);
            const double fx = x - x0, fy = y - y0;  // in [0, 1) here
            const int x1 = x0 + 1 < W ? x0 + 1 : W - 1, y1 = y0 + 1 < H ? y0 + 1 : H - 1;
            const double s00 = (1 - fx) * (1 - fy), s01 = (1 - fx) * fy, s10 = fx * (1 - fy), s11 = fx * fy;
            const std::size_t q00 = static_cast<std::size_t>(y0) * W + x0, q01 = static_cast<std::size_t>(y1) * W + x0;
            const std::size_t q10 = static_cast<std::size_t>(y0) * W + x1, q11 = static_cast<std::size_t>(y1) * W + x1;
            for (int c = 0; c < C; ++c) {
                const double* f = f2 + c * N;
                o[c * N + p] = f[q00] * s00 + f[q01] * s01 + f[q10] * s10 + f[q11] * s11;
            }
        }
    }
}

void coarse2fine(const double* im1, const double* im2, int H, int W, int C, const FlowParams& params, double* u_out,
                 double* v_out, double* im2w_out, const StopCheck& stop) {
    const std::size_t N = static_cast<std::size_t>(H) * W;
    Image I1(H, W, C), I2(H, W, C);
    std::memcpy(I1.ptr(), im1, N * C * sizeof(double));
    std::memcpy(I2.ptr(), im2, N * C * sizeof(double));

    std::vector<Image> pyr1, pyr2;
    build_pyramid(I1, params.ratio, params.minWidth, pyr1);
    build_pyramid(I2, params.ratio, params.minWidth, pyr2);
    const int L = static_cast<int>(pyr1.size());

    Image u, v, F1, F2, F2w, up;
    const double upscale = 1 / params.ratio;
    for (int k = L - 1; k >= 0; --k) {
        const Image& P1 = pyr1[k];
        const Image& P2 = pyr2[k];
        const bool bgr = (k == 0 && params.colType == 1);
        features(P1, bgr, F1);
        features(P2, bgr, F2);
        if (k == L - 1) {
            u.resize(P1.H, P1.W, 1);
            v.resize(P1.H, P1.W, 1);
            F2w = F2;
        } else {
            const double sx = static_cast<double>(P1.W) / u.W;
            const double sy = static_cast<double>(P1.H) / u.H;
            resample_bilinear(u, up, P1.H, P1.W, sx, sy);
            std::swap(u, up);
            resample_bilinear(v, up, P1.H, P1.W, sx, sy);
            std::swap(v, up);
            for (double& x : u.data) x *= upscale;
            for (double& x : v.data) x *= upscale;
            warp_bilinear_fallback(F1, F2, u, v, F2w);
        }
        solve_level(F1, F2, F2w, u, v, params.alpha, params.nOuter + k, params.nInner, params.nSOR + 3 * k, stop);
    }
    std::memcpy(u_out, u.ptr(), N * sizeof(double));
    std::memcpy(v_out, v.ptr(), N * sizeof(double));
    warp_bicubic(I1, I2, u, v, im2w_out);
}

}  // namespace c2f
