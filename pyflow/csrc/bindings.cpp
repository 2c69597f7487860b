// pybind11 bindings of the C++ Coarse2Fine core. Input validation and conversions live in pyflow/__init__.py;
// this layer only re-checks what memory safety depends on, then runs the computation without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

#include "coarse2fine.h"

namespace py = pybind11;

namespace {

using Array = py::array_t<double, py::array::c_style>;

py::tuple coarse2fine_flow(const Array& im1, const Array& im2, double alpha, double ratio, double minWidth,
                           int nOuter, int nInner, int nSOR, int colType) {
    if (im1.ndim() != 3 || im2.ndim() != 3)
        throw std::invalid_argument("_pyflow.coarse2fine_flow expects float64 C-contiguous (H, W, C) arrays");
    for (int d = 0; d < 3; ++d)
        if (im1.shape(d) != im2.shape(d)) throw std::invalid_argument("Im1 and Im2 must have the same shape");
    const py::ssize_t H = im1.shape(0), W = im1.shape(1), C = im1.shape(2);
    if (H < 1 || W < 1 || C < 1) throw std::invalid_argument("images must not be empty");
    if (!(ratio > 0) || !(minWidth > 0) || nOuter < 0 || nInner < 0 || nSOR < 0)
        throw std::invalid_argument("invalid Coarse2Fine parameters");

    c2f::FlowParams params;
    params.alpha = alpha;
    params.ratio = ratio;
    params.minWidth = minWidth;
    params.nOuter = nOuter;
    params.nInner = nInner;
    params.nSOR = nSOR;
    params.colType = colType;

    Array u({H, W}), v({H, W}), im2w({H, W, C});
    const double* p1 = im1.data();
    const double* p2 = im2.data();
    double* pu = u.mutable_data();
    double* pv = v.mutable_data();
    double* pw = im2w.mutable_data();
    {
        py::gil_scoped_release release;
        c2f::coarse2fine(p1, p2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), params, pu, pv, pw);
    }
    return py::make_tuple(u, v, im2w);
}

}  // namespace

PYBIND11_MODULE(_pyflow, m) {
    m.doc() = "C++ core of pyflow (Coarse2Fine optical flow). Use the Python wrapper pyflow.coarse2fine_flow.";
    m.def("coarse2fine_flow", &coarse2fine_flow, py::arg("Im1").noconvert(), py::arg("Im2").noconvert(),
          py::arg("alpha"), py::arg("ratio"), py::arg("minWidth"), py::arg("nOuterFPIterations"),
          py::arg("nInnerFPIterations"), py::arg("nSORIterations"), py::arg("colType"),
          "Raw Coarse2Fine flow on float64 C-contiguous (H, W, C) arrays; returns (u, v, im2W). Releases the GIL.");
    m.def("pyramid_levels", &c2f::pyramid_levels, py::arg("height"), py::arg("width"), py::arg("ratio"),
          py::arg("minWidth"), "Number of pyramid levels used for an image of this size (at least 1).");
}
