// pybind11 bindings of the C++ Coarse2Fine core. Input validation and conversions live in pyflow/__init__.py;
// this layer only re-checks what memory safety depends on, then runs the computation without the GIL.
// Ctrl-C: on the main thread the solver asks Python for pending signals about every 20 ms (with the GIL held just
// for that) and stops with the signal handler's exception (KeyboardInterrupt); ``cancel_running`` stops every
// computation running in any thread (the batch wrapper calls it when its caller is interrupted).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>

#include "coarse2fine.h"

namespace py = pybind11;

namespace {

using Array = py::array_t<double, py::array::c_style>;
using Clock = std::chrono::steady_clock;

std::atomic<long> g_cancel_epoch{0};  // cancel_running() bumps it; a computation started earlier then stops
std::thread::id g_main_thread;        // the thread that imported the module (Python's main thread)

// The StopCheck of one computation: cancelled by cancel_running(), or (main thread only) by a pending signal whose
// Python handler raised; ``raised`` then says that Python's error indicator holds that exception.
struct StopState {
    long epoch;
    bool main_thread = std::this_thread::get_id() == g_main_thread;
    Clock::time_point last = Clock::now();
    bool raised = false;

    bool operator()() {
        if (g_cancel_epoch.load() != epoch) return true;
        if (!main_thread) return false;
        const Clock::time_point now = Clock::now();
        if (now - last < std::chrono::milliseconds(20)) return false;
        last = now;
        py::gil_scoped_acquire acquire;
        raised = PyErr_CheckSignals() != 0;
        return raised;
    }
};

py::tuple coarse2fine_flow(const Array& im1, const Array& im2, double alpha, double ratio, double minWidth,
                           int nOuter, int nInner, int nSOR, int colType, long epoch) {
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
    StopState state;
    state.epoch = epoch < 0 ? g_cancel_epoch.load() : epoch;
    try {
        py::gil_scoped_release release;
        c2f::coarse2fine(p1, p2, static_cast<int>(H), static_cast<int>(W), static_cast<int>(C), params, pu, pv, pw,
                         [&state]() { return state(); });
    } catch (const c2f::Cancelled&) {
        if (state.raised) throw py::error_already_set();  // KeyboardInterrupt from the SIGINT handler
        throw std::runtime_error("coarse2fine_flow was cancelled (cancel_running)");
    }
    return py::make_tuple(u, v, im2w);
}

}  // namespace

PYBIND11_MODULE(_pyflow, m) {
    m.doc() = "C++ core of pyflow (Coarse2Fine optical flow). Use the Python wrapper pyflow.coarse2fine_flow.";
    g_main_thread = std::this_thread::get_id();
    m.def("cancel_running", []() { ++g_cancel_epoch; },
          "Stop every coarse2fine_flow started under the current epoch, in any thread (each raises RuntimeError).");
    m.def("cancel_epoch", []() { return g_cancel_epoch.load(); }, "The epoch that cancel_running() ends.");
    m.def("coarse2fine_flow", &coarse2fine_flow, py::arg("Im1").noconvert(), py::arg("Im2").noconvert(),
          py::arg("alpha"), py::arg("ratio"), py::arg("minWidth"), py::arg("nOuterFPIterations"),
          py::arg("nInnerFPIterations"), py::arg("nSORIterations"), py::arg("colType"), py::arg("epoch") = -1,
          "Raw Coarse2Fine flow on float64 C-contiguous (H, W, C) arrays; returns (u, v, im2W). Releases the GIL. "
          "epoch: the cancel_epoch() the caller started under (-1: now); a later cancel_running() stops it.");
    m.def("pyramid_levels", &c2f::pyramid_levels, py::arg("height"), py::arg("width"), py::arg("ratio"),
          py::arg("minWidth"), "Number of pyramid levels used for an image of this size (at least 1).");
}
