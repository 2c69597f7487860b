// One pyramid level of Coarse2Fine: fixed-point iterations and the SOR solve (pyflow-algorithm.md 3.6).
//
// Speed without changing a single rounding: the SOR sweeps are lexicographic Gauss-Seidel and stay so, but
// several consecutive sweeps run as a wavefront (sweep s + 1 two rows behind sweep s). Every pixel update reads
// exactly the values it reads in the plain sweep order, so the result is bitwise identical, while the CPU
// overlaps the otherwise serial dependency chains of the different sweeps. Border pixels use zero-weight
// padding instead of branches; adding a zero-weight term leaves a sum unchanged. SIMD is only used where lanes
// are independent (pixels of a plane); it rounds exactly like scalar code.
#include <algorithm>
#include <cmath>
#include <vector>

#include "coarse2fine.h"
#include "planar.h"

namespace c2f {

namespace {

const double kSmooth5[5] = {0.02, 0.11, 0.74, 0.11, 0.02};
const double kEps2 = 1e-6;  // 0.001^2, in both Charbonnier penalties
const double kOmega = 1.8;

// The linear system on a grid padded by one pixel on every side (pixel (i, j) at q = (i + 1) * Wp + (j + 1)).
// The unknowns are stored as pairs duv[2q] = du, duv[2q + 1] = dv (one cache line holds both halves of a
// neighbour); each pixel's coefficients form one 64-byte record.
struct Coef {
    double wx;    // weight of the edge to the right neighbour (0 in the last column and in the padding)
    double wy;    // weight of the edge to the lower neighbour (0 in the last row and in the padding)
    double a12;   // <psi Ix Iy>
    double r1;    // right-hand sides
    double r2;
    double inv1;  // omega / (A11 + 0.05 alpha + alpha sum(w))
    double inv2;  // omega / (A22 + 0.05 alpha + alpha sum(w))
    double pad;
};

struct System {
    int H = 0, W = 0, Wp = 0;
    std::vector<double> duv;
    std::vector<Coef> coef;

    void reset(int h, int w) {
        H = h;
        W = w;
        Wp = w + 2;
        const std::size_t n = static_cast<std::size_t>(h + 2) * Wp;
        duv.assign(2 * n, 0.0);
        coef.assign(n, Coef{0, 0, 0, 0, 0, 0, 0, 0});
    }
    std::size_t at(int i, int j) const { return static_cast<std::size_t>(i + 1) * Wp + (j + 1); }
};

// One Gauss-Seidel/SOR pixel update, du first, then dv with the new du:
//   sigma = wl * d[left] + wr * d[right] + wu * d[up] + wd * d[down]   (for d = du and d = dv)
//   du <- (1 - omega) du + inv1 * (r1 - (sigma_u * -alpha + a12 * dv))
//   dv <- (1 - omega) dv + inv2 * (r2 - (sigma_v * -alpha + a12 * du_new))
// The left neighbour's (du, dv) is passed in (kept in registers along the row) and the new (du, dv) returned.
// du and dv stay separate scalar chains: du of the next pixel only waits for this du, not for dv.
struct Pair {
    double u, v;
};

inline Pair sor_pixel(const Coef* coef, double* duv, std::ptrdiff_t Wp, double neg_alpha, std::size_t q, Pair left) {
    const Coef& c = coef[q];
    const double wl = coef[q - 1].wx, wr = c.wx, wu = coef[q - Wp].wy, wd = c.wy;
    double* d = duv + 2 * q;
    const double* up = d - 2 * Wp;
    const double* down = d + 2 * Wp;
    double sigma1 = (wl * left.u + wr * d[2] + wu * up[0] + wd * down[0]) * neg_alpha;
    double sigma2 = (wl * left.v + wr * d[3] + wu * up[1] + wd * down[1]) * neg_alpha;
    sigma1 += c.a12 * d[1];
    const double du = (1 - kOmega) * d[0] + c.inv1 * (c.r1 - sigma1);
    sigma2 += c.a12 * du;
    const double dv = (1 - kOmega) * d[1] + c.inv2 * (c.r2 - sigma2);
    d[0] = du;
    d[1] = dv;
    return Pair{du, dv};
}

template <int K>
inline void sor_rows(const Coef* coef, double* duv, std::ptrdiff_t Wp, double neg_alpha, const std::size_t* rows,
                     int W) {
    Pair left[K];
    for (int k = 0; k < K; ++k) left[k] = Pair{0.0, 0.0};  // the padding column
    for (int j = 0; j < W; ++j)
        for (int k = 0; k < K; ++k) left[k] = sor_pixel(coef, duv, Wp, neg_alpha, rows[k] + j, left[k]);
}

constexpr int kWave = 4;  // sweeps in flight at once (8 spills registers and is slower)

void sor_sweeps(System& sys, double alpha, int nSweeps, const StopCheck& stop) {
    const Coef* coef = sys.coef.data();
    double* duv = sys.duv.data();
    const std::ptrdiff_t Wp = sys.Wp;
    const double neg_alpha = -alpha;
    const int H = sys.H, W = sys.W;
    for (int s0 = 0; s0 < nSweeps; s0 += kWave) {
        if (stop && stop()) throw Cancelled{};
        const int g = std::min(kWave, nSweeps - s0);
        for (int t = 0; t < H + 2 * (g - 1); ++t) {
            // Sweep s0 + k works on row t - 2k (any order of the rows within a step is valid).
            std::size_t rows[kWave];
            int nr = 0;
            for (int k = 0; k < g; ++k) {
                const int r = t - 2 * k;
                if (r >= 0 && r < H) rows[nr++] = sys.at(r, 0);
            }
            switch (nr) {
                case 0: break;  // only when H = 1: the sweeps are two rows apart
                case 1: sor_rows<1>(coef, duv, Wp, neg_alpha, rows, W); break;
                case 2: sor_rows<2>(coef, duv, Wp, neg_alpha, rows, W); break;
                case 3: sor_rows<3>(coef, duv, Wp, neg_alpha, rows, W); break;
                case 4: sor_rows<4>(coef, duv, Wp, neg_alpha, rows, W); break;
            }
        }
    }
}

// Robustness weight of the smoothness term from forward differences of (U, V) (zero in the last row/column).
void smoothness_weight(const double* U, const double* V, int H, int W, double* phi) {
    for (int i = 0; i < H; ++i) {
        for (int j = 0; j < W; ++j) {
            const std::size_t p = static_cast<std::size_t>(i) * W + j;
            const double ux = j < W - 1 ? U[p + 1] - U[p] : 0.0;
            const double uy = i < H - 1 ? U[p + W] - U[p] : 0.0;
            const double vx = j < W - 1 ? V[p + 1] - V[p] : 0.0;
            const double vy = i < H - 1 ? V[p + W] - V[p] : 0.0;
            phi[p] = ux * ux + uy * uy + vx * vx + vy * vy;
        }
    }
    charbonnier_weight(phi, phi, static_cast<std::size_t>(H) * W, kEps2);
}

// (L f)_p = sum over 4-neighbours q of w_pq (f_p - f_q), each pixel owning its right and lower edge weight.
inline double weighted_laplacian(const double* f, const double* phi, int H, int W, int i, int j) {
    const std::size_t p = static_cast<std::size_t>(i) * W + j;
    double acc = 0;
    if (j < W - 1) acc -= (f[p + 1] - f[p]) * phi[p];
    if (j > 0) acc += (f[p] - f[p - 1]) * phi[p - 1];
    if (i < H - 1) acc -= (f[p + W] - f[p]) * phi[p];
    if (i > 0) acc += (f[p] - f[p - W]) * phi[p - W];
    return acc;
}

}  // namespace

void solve_level(const Image& F1, const Image& F2, Image& F2w, Image& u, Image& v, double alpha, int nOuter,
                 int nInner, int nSOR, const StopCheck& stop) {
    const int H = F1.H, W = F1.W, C = F1.C;
    const std::size_t N = F1.pixels();
    const std::size_t NC = N * C;

    // Planar work images (C planes of H x W), allocated once per level.
    std::vector<double> S1(NC), S2(NC), M(NC), Ix(NC), Iy(NC), It(NC), tmp(N);
    smooth_planes<2>(F1.ptr(), S1.data(), tmp.data(), H, W, C, kSmooth5);  // frame 1 is fixed within a level

    System sys;
    sys.reset(H, W);
    std::vector<double> phi(N), U(N), V(N), DU(N), DV(N), a11(N), a12(N), a22(N), b1(N), b2(N), psi(N), lu(N), lv(N),
        ws(N);
    const double damp = alpha * 0.05;

    for (int outer = 0; outer < nOuter; ++outer) {
        if (stop && stop()) throw Cancelled{};
        // Derivatives on the smoothed images: Ix, Iy of the 0.4/0.6 blend, It = S2 - S1.
        smooth_planes<2>(F2w.ptr(), S2.data(), tmp.data(), H, W, C, kSmooth5);
        for (std::size_t k = 0; k < NC; ++k) {
            M[k] = S1[k] * 0.4 + S2[k] * 0.6;
            It[k] = S2[k] - S1[k];
        }
        for (int c = 0; c < C; ++c) {
            hfilter_plane<2>(M.data() + c * N, Ix.data() + c * N, H, W, kDeriv5);
            vfilter_plane<2>(M.data() + c * N, Iy.data() + c * N, H, W, kDeriv5);
        }

        std::fill(DU.begin(), DU.end(), 0.0);
        std::fill(DV.begin(), DV.end(), 0.0);
        for (int inner = 0; inner < nInner; ++inner) {
            if (stop && stop()) throw Cancelled{};
            for (std::size_t p = 0; p < N; ++p) {
                U[p] = u.data[p] + DU[p];
                V[p] = v.data[p] + DV[p];
            }
            smoothness_weight(U.data(), V.data(), H, W, phi.data());

            // Channel-averaged robust data terms; channels accumulate in order c = 0..C-1.
            std::fill(a11.begin(), a11.end(), 0.0);
            std::fill(a12.begin(), a12.end(), 0.0);
            std::fill(a22.begin(), a22.end(), 0.0);
            std::fill(b1.begin(), b1.end(), 0.0);
            std::fill(b2.begin(), b2.end(), 0.0);
            for (int c = 0; c < C; ++c) {
                const double* ix = Ix.data() + c * N;
                const double* iy = Iy.data() + c * N;
                const double* it = It.data() + c * N;
                for (std::size_t p = 0; p < N; ++p) {
                    const double r = it[p] + ix[p] * DU[p] + iy[p] * DV[p];
                    psi[p] = r * r;
                }
                charbonnier_weight(psi.data(), psi.data(), N, kEps2);
                for (std::size_t p = 0; p < N; ++p) {
                    a11[p] += psi[p] * ix[p] * ix[p];
                    a12[p] += psi[p] * ix[p] * iy[p];
                    a22[p] += psi[p] * iy[p] * iy[p];
                    b1[p] += psi[p] * ix[p] * it[p];
                    b2[p] += psi[p] * iy[p] * it[p];
                }
            }

            // Weighted Laplacians and neighbour-weight sums (branchy borders), then the vectorisable divisions.
            for (int i = 0; i < H; ++i) {
                for (int j = 0; j < W; ++j) {
                    const std::size_t p = static_cast<std::size_t>(i) * W + j, q = sys.at(i, j);
                    lu[p] = weighted_laplacian(u.ptr(), phi.data(), H, W, i, j);
                    lv[p] = weighted_laplacian(v.ptr(), phi.data(), H, W, i, j);
                    sys.coef[q].wx = j < W - 1 ? phi[p] : 0.0;
                    sys.coef[q].wy = i < H - 1 ? phi[p] : 0.0;
                    double wsum = 0;
                    if (j > 0) wsum += phi[p - 1];
                    if (j < W - 1) wsum += phi[p];
                    if (i > 0) wsum += phi[p - W];
                    if (i < H - 1) wsum += phi[p];
                    ws[p] = wsum * alpha;
                }
            }
            const double dC = C;
            for (int i = 0; i < H; ++i) {
                const std::size_t p0 = static_cast<std::size_t>(i) * W;
                Coef* row = sys.coef.data() + sys.at(i, 0);
                for (int j = 0; j < W; ++j) {
                    const std::size_t p = p0 + j;
                    row[j].r1 = -(b1[p] / dC + lu[p] * alpha);
                    row[j].r2 = -(b2[p] / dC + lv[p] * alpha);
                    row[j].a12 = a12[p] / dC;
                    row[j].inv1 = kOmega / (a11[p] / dC + damp + ws[p]);
                    row[j].inv2 = kOmega / (a22[p] / dC + damp + ws[p]);
                }
            }
            std::fill(sys.duv.begin(), sys.duv.end(), 0.0);
            sor_sweeps(sys, alpha, nSOR, stop);
            for (int i = 0; i < H; ++i)
                for (int j = 0; j < W; ++j) {
                    const std::size_t p = static_cast<std::size_t>(i) * W + j, q = sys.at(i, j);
                    DU[p] = sys.duv[2 * q];
                    DV[p] = sys.duv[2 * q + 1];
                }
        }
        for (std::size_t p = 0; p < N; ++p) {
            u.data[p] += DU[p];
            v.data[p] += DV[p];
        }
        if (outer + 1 < nOuter) warp_bilinear_fallback(F1, F2, u, v, F2w);
    }
}

}  // namespace c2f
