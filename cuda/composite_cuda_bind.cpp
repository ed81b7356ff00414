// neural3d: Python bindings of the CUDA compositing kernels (composite_cuda.cu).
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
}  // namespace n3d_cuda

static std::string simd_isa() { return "cuda"; }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "neural3d fused emission-absorption compositing (CUDA)";
  m.def("composite_forward", &n3d_cuda::composite_forward_cuda,
        "forward (feat, depth, opacity, weights)");
  m.def("composite_backward", &n3d_cuda::composite_backward_cuda,
        "backward (grad_sigma, grad_feat)");
  m.def("simd_isa", &simd_isa, "kernel flavour");
}
