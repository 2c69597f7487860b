// Coarse2Fine optical flow (Ce Liu's method as used by pyflow), written from pyflow-algorithm.md.
#pragma once

#include <functional>

#include "image.h"

namespace c2f {

// Asked between solver sweeps; returning true stops the computation with ``Cancelled`` (Ctrl-C, cancel_running).
using StopCheck = std::function<bool()>;

// Thrown out of coarse2fine / solve_level when the StopCheck asked to stop; the outputs are then unspecified.
struct Cancelled {};

struct FlowParams {
    double alpha = 1;
    double ratio = 0.5;
    double minWidth = 40;
    int nOuter = 3;
    int nInner = 1;
    int nSOR = 20;
    int colType = 0;
};

// Feature images (F1, F2, F2w) are PLANAR: channel c of pixel p at c * H * W + p (Image::C = channel count).
//
// Solve one pyramid level: refine (u, v) (H x W x 1) between feature images F1 and F2.
// F2w must hold F2 warped by the incoming (u, v) (or F2 itself at the coarsest level).
void solve_level(const Image& F1, const Image& F2, Image& F2w, Image& u, Image& v, double alpha, int nOuter,
                 int nInner, int nSOR, const StopCheck& stop = nullptr);

// Warp F2 by (u, v) with bilinear sampling; pixels that sample outside the image copy F1.
void warp_bilinear_fallback(const Image& F1, const Image& F2, const Image& u, const Image& v, Image& out);

// Number of pyramid levels actually used for an image of the given size (at least 1).
int pyramid_levels(int H, int W, double ratio, double minWidth);

// Full computation. im1, im2: H x W x C doubles (C-contiguous); outputs u, v (H x W), im2W (H x W x C).
// Pure function of its inputs: no global state, no output to stdout.
// ``stop`` (may be empty) is asked between SOR sweeps; when it returns true, ``Cancelled`` is thrown.
void coarse2fine(const double* im1, const double* im2, int H, int W, int C, const FlowParams& params, double* u_out,
                 double* v_out, double* im2w_out, const StopCheck& stop = nullptr);

}  // namespace c2f
