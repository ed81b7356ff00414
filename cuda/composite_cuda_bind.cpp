// neural3d: Python bindings of the CUDA kernels (composite_cuda.cu, triplane_cuda.cu).
#include <torch/extension.h>

#include <string>
#include <vector>

namespace n3d_cuda {
std::vector<at::Tensor> composite_forward_cuda(const at::Tensor& sigma, const at::Tensor& t0,
                                               const at::Tensor& t1, const at::Tensor& feat,
                                               const c10::optional<at::Tensor>& offsets,
                                               const c10::optional<at::Tensor>& counts,
                                               double stop_eps, bool unit_delta,
                                               bool want_weights);
std::vector<at::Tensor> composite_backward_cuda(
    const at::Tensor& sigma, const at::Tensor& t0, const at::Tensor& t1, const at::Tensor& feat,
    const c10::optional<at::Tensor>& offsets, const c10::optional<at::Tensor>& counts,
    const at::Tensor& out, const at::Tensor& depth, const at::Tensor& opacity,
    const at::Tensor& g_out, const at::Tensor& g_depth, const at::Tensor& g_opacity,
    const c10::optional<at::Tensor>& g_weights, double stop_eps, bool unit_delta);
at::Tensor triplane_forward_cuda(const at::Tensor& planes, const at::Tensor& points,
                                 int64_t agg);
std::vector<at::Tensor> triplane_backward_cuda(const at::Tensor& planes, const at::Tensor& points,
                                               const at::Tensor& g_out, int64_t agg,
                                               bool want_planes, bool want_points);
}  // namespace n3d_cuda

static std::string simd_isa() { return "cuda"; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "neural3d fused kernels (CUDA): compositing, triplane sampling";
  m.def("composite_forward", &n3d_cuda::composite_forward_cuda,
        "forward (feat, depth, opacity, weights)");
  m.def("composite_backward", &n3d_cuda::composite_backward_cuda,
        "backward (grad_sigma, grad_feat)");
  m.def("triplane_forward", &n3d_cuda::triplane_forward_cuda,
        "triplane sampling: planes [B,3,C,H,W], points [B,N,3] in [-1,1], aggregate "
        "(0 sum, 1 mean, 2 concat) -> [B,N,C or 3C]");
  m.def("triplane_backward", &n3d_cuda::triplane_backward_cuda,
        "triplane sampling backward -> [grad_planes or undefined, grad_points or undefined]");
  m.def("simd_isa", &simd_isa, "kernel flavour");
}
