// neural3d: emission-absorption compositing on the CPU (forward and backward).
//
// Layouts: padded (sigma, t0, t1 [R, S], feat [R, S, C]) and packed (flat [N] / [N, C] with
// per-ray int64 offsets and counts [R]). Outputs: feat [R, C] (no background: the caller blends
// it), depth [R] (sum w_i * mid_i), opacity [R] (sum w_i), weights on request.
//
// float: rays are processed in blocks of W lanes with a vectorised exp (composite_simd.h),
// compiled for baseline x86-64 / AVX2+FMA / AVX-512 and chosen at run time from the CPU's
// features, so the extension needs no -march flag and runs on any x86-64 (or other) CPU.
// double: a scalar loop (used by gradcheck). Threads: at::parallel_for (OpenMP) over rays.
// Denormals are flushed to zero (MXCSR FTZ/DAZ) inside the kernels and restored afterwards.
//
// The backward stores nothing per sample between the passes: it recomputes transmittance in log
// space and uses the suffix form dL/dtau_k = T_{k+1} g_k - sum_{i>k} w_i g_i. float: the suffix is
// summed exactly in reverse from a per-thread scratch of the W rays in flight (no fp32
// cancellation); double: suffix = total - prefix with the total from the saved outputs. Early termination (T_i < stop_eps) makes identical
// decisions in forward and backward because both run the same arithmetic.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#define N3D_X86 1
#endif

namespace n3d {

struct BlockIn {
  const float* sigma;
  const float* t0;
  const float* t1;
  const float* feat;
  const int64_t* offsets;  // null: padded
  const int64_t* counts;
  int64_t R;  // rays
  int64_t S;  // padded samples per ray
  int64_t C;
  float log_eps;  // -inf when off
  bool early_stop;
  bool unit_delta;
};
struct FwdOut {
  float* out;
  float* depth;
  float* opacity;
  float* weights;  // may be null
};
struct BwdIn {
  const float* out;
  const float* depth;
  const float* opacity;
  const float* g_out;
  const float* g_depth;
  const float* g_opacity;
  const float* g_weights;  // may be null
};
struct BwdOut {
  float* g_sigma;
  float* g_feat;
};

#if defined(__GNUC__) || defined(__clang__)
#define N3D_VEC 1
#endif

#ifdef N3D_VEC
#if defined(N3D_X86) && defined(__GNUC__) && !defined(__clang__)
#define N3D_MULTI 1
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512 {
#define NEURAL3D_W 16
#include "composite_simd.h"
#undef NEURAL3D_W
}  // namespace isa_avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#define NEURAL3D_W 8
#define N3D_AVX2_TRANSPOSE 1
#include "composite_simd.h"
#undef N3D_AVX2_TRANSPOSE
#undef NEURAL3D_W
}  // namespace isa_avx2
#pragma GCC pop_options
#endif
namespace isa_base {
#define NEURAL3D_W 4
#include "composite_simd.h"
#undef NEURAL3D_W
}  // namespace isa_base
#endif

using FwdBlockFn = void (*)(const BlockIn&, const FwdOut&, int64_t, int, int64_t, float*);
using BwdBlockFn = void (*)(const BlockIn&, const BwdIn&, const BwdOut&, int64_t, int, int64_t,
                            float*);
struct Isa {
  const char* name;
  int width;
  FwdBlockFn fwd;
  BwdBlockFn bwd;
};

static Isa pick_isa() {
#ifdef N3D_VEC
#ifdef N3D_MULTI
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    return {"avx512", 16, isa_avx512::forward_block, isa_avx512::backward_block};
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return {"avx2", 8, isa_avx2::forward_block, isa_avx2::backward_block};
#endif
  return {"baseline-vec4", 4, isa_base::forward_block, isa_base::backward_block};
#else
  return {"scalar", 1, nullptr, nullptr};
#endif
}

static Isa& isa() {
  static Isa chosen = [] {
    Isa i = pick_isa();
    const char* env = std::getenv("NEURAL3D_CPU_ISA");  // testing aid: force a lower variant
#ifdef N3D_VEC
    if (env && std::string(env) == "baseline")
      i = {"baseline-vec4", 4, isa_base::forward_block, isa_base::backward_block};
#ifdef N3D_MULTI
    if (env && std::string(env) == "avx2" && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
      i = {"avx2", 8, isa_avx2::forward_block, isa_avx2::backward_block};
#endif
#endif
    if (env && std::string(env) == "scalar") i = {"scalar", 1, nullptr, nullptr};
    return i;
  }();
  return chosen;
}

static float* align64(float* p) {
  return reinterpret_cast<float*>((reinterpret_cast<uintptr_t>(p) + 63) & ~uintptr_t(63));
}

// Flush denormals while a kernel runs on this thread.
struct DenormalGuard {
#ifdef N3D_X86
  unsigned int saved;
  DenormalGuard() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040); }  // FTZ | DAZ
  ~DenormalGuard() { _mm_setcsr(saved); }
#endif
};

// ---------------------------------------------------------------- scalar path (double; float
// when no vector extension is available). One ray at a time.
template <typename T>
struct ScalarArgs {
  const T* sigma;
  const T* t0;
  const T* t1;
  const T* feat;
  const int64_t* offsets;
  const int64_t* counts;
  int64_t S, C;
  T log_eps;
  bool unit_delta;
};

template <typename T>
static void forward_ray(const ScalarArgs<T>& a, int64_t r, T* out, T* depth, T* opacity,
                        T* weights) {
  const int64_t off = a.offsets ? a.offsets[r] : r * a.S;
  const int64_t n = a.counts ? a.counts[r] : a.S;
  const int64_t C = a.C;
  T logT = 0, Tr = 1, d = 0, op = 0;
  for (int64_t c = 0; c < C; ++c) out[r * C + c] = 0;
  int64_t s = 0;
  for (; s < n; ++s) {
    if (!(logT >= a.log_eps)) break;
    const int64_t i = off + s;
    const T tau = a.unit_delta ? a.sigma[i] : a.sigma[i] * (a.t1[i] - a.t0[i]);
    const T w = Tr * -std::expm1(-tau);
    logT -= tau;
    Tr = std::exp(logT);
    if (weights) weights[i] = w;
    op += w;
    d += w * (T(0.5) * (a.t0[i] + a.t1[i]));
    for (int64_t c = 0; c < C; ++c) out[r * C + c] += w * a.feat[i * C + c];
  }
  if (weights)
    for (; s < n; ++s) weights[off + s] = 0;
  depth[r] = d;
  opacity[r] = op;
}

template <typename T>
static void backward_ray(const ScalarArgs<T>& a, int64_t r, const T* out, const T* depth,
                         const T* opacity, const T* g_out, const T* g_depth, const T* g_opacity,
                         const T* g_weights, T* g_sigma, T* g_feat) {
  const int64_t off = a.offsets ? a.offsets[r] : r * a.S;
  const int64_t n = a.counts ? a.counts[r] : a.S;
  const int64_t C = a.C;
  T total = g_depth[r] * depth[r] + g_opacity[r] * opacity[r];
  for (int64_t c = 0; c < C; ++c) total += g_out[r * C + c] * out[r * C + c];
  if (g_weights) {
    T logT = 0, Tr = 1;
    for (int64_t s = 0; s < n && logT >= a.log_eps; ++s) {
      const int64_t i = off + s;
      const T tau = a.unit_delta ? a.sigma[i] : a.sigma[i] * (a.t1[i] - a.t0[i]);
      total += Tr * -std::expm1(-tau) * g_weights[i];
      logT -= tau;
      Tr = std::exp(logT);
    }
  }
  T logT = 0, Tr = 1, prefix = 0;
  int64_t s = 0;
  for (; s < n; ++s) {
    if (!(logT >= a.log_eps)) break;
    const int64_t i = off + s;
    const T dl = a.unit_delta ? T(1) : a.t1[i] - a.t0[i];
    const T tau = a.sigma[i] * dl;
    const T w = Tr * -std::expm1(-tau);
    logT -= tau;
    const T Tn = std::exp(logT);
    T gi = g_depth[r] * (T(0.5) * (a.t0[i] + a.t1[i])) + g_opacity[r];
    if (g_weights) gi += g_weights[i];
    for (int64_t c = 0; c < C; ++c) {
      gi += g_out[r * C + c] * a.feat[i * C + c];
      g_feat[i * C + c] = w * g_out[r * C + c];
    }
    prefix += w * gi;
    g_sigma[i] = (Tn * gi - (total - prefix)) * dl;
    Tr = Tn;
  }
  for (; s < n; ++s) {
    g_sigma[off + s] = 0;
    for (int64_t c = 0; c < C; ++c) g_feat[(off + s) * C + c] = 0;
  }
}

// ---------------------------------------------------------------- checks and dispatch
struct Layout {
  int64_t R, S, C, smax;
  bool packed;
};

static Layout check_inputs(const at::Tensor& sigma, const at::Tensor& t0, const at::Tensor& t1,
                           const at::Tensor& feat, const c10::optional<at::Tensor>& offsets,
                           const c10::optional<at::Tensor>& counts) {
  for (const at::Tensor* t : {&sigma, &t0, &t1, &feat}) {
    TORCH_CHECK(t->device().is_cpu(), "neural3d composite (cpp): tensors must be on the CPU");
    TORCH_CHECK(t->is_contiguous(), "neural3d composite (cpp): tensors must be contiguous");
    TORCH_CHECK(t->scalar_type() == sigma.scalar_type(),
                "neural3d composite (cpp): all inputs must share one dtype");
  }
  TORCH_CHECK(sigma.scalar_type() == at::kFloat || sigma.scalar_type() == at::kDouble,
              "neural3d composite (cpp): float32 or float64 only");
  TORCH_CHECK(t0.sizes() == sigma.sizes() && t1.sizes() == sigma.sizes(),
              "neural3d composite (cpp): t_starts/t_ends must match densities");
  Layout L{};
  L.packed = offsets.has_value() && offsets->defined();
  if (L.packed) {
    TORCH_CHECK(counts.has_value() && counts->defined(), "packed layout needs counts");
    TORCH_CHECK(sigma.dim() == 1 && feat.dim() == 2 && feat.size(0) == sigma.size(0),
                "packed layout: densities [N], features [N, C]");
    TORCH_CHECK(offsets->scalar_type() == at::kLong && counts->scalar_type() == at::kLong &&
                    offsets->is_contiguous() && counts->is_contiguous() &&
                    offsets->numel() == counts->numel(),
                "packed layout: offsets/counts must be contiguous int64 [R]");
    L.R = offsets->numel();
    L.S = 0;
    L.C = feat.size(1);
    L.smax = L.R ? counts->max().item<int64_t>() : 0;
  } else {
    TORCH_CHECK(sigma.dim() == 2 && feat.dim() == 3 && feat.size(0) == sigma.size(0) &&
                    feat.size(1) == sigma.size(1),
                "padded layout: densities [R, S], features [R, S, C]");
    L.R = sigma.size(0);
    L.S = sigma.size(1);
    L.C = feat.size(2);
    L.smax = L.S;
  }
  return L;
}

static const int64_t* ptr_or_null(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<int64_t>() : nullptr;
}

std::vector<at::Tensor> composite_forward(const at::Tensor& sigma, const at::Tensor& t0,
                                          const at::Tensor& t1, const at::Tensor& feat,
                                          const c10::optional<at::Tensor>& offsets,
                                          const c10::optional<at::Tensor>& counts,
                                          double stop_eps, bool unit_delta, bool want_weights) {
  const Layout L = check_inputs(sigma, t0, t1, feat, offsets, counts);
  auto out = at::zeros({L.R, L.C}, sigma.options());
  auto depth = at::zeros({L.R}, sigma.options());
  auto opacity = at::zeros({L.R}, sigma.options());
  auto weights = !want_weights ? at::empty({0}, sigma.options())
                 : L.packed   ? at::zeros_like(sigma)   // samples outside every ray stay 0
                              : at::empty_like(sigma);  // every entry is written
  if (L.R == 0) return {out, depth, opacity, weights};
  const int64_t* offs = ptr_or_null(offsets);
  const int64_t* cnts = ptr_or_null(counts);
  const bool early = stop_eps > 0;
  const double log_eps = early ? std::log(stop_eps) : -std::numeric_limits<double>::infinity();
  const Isa& I = isa();
  if (sigma.scalar_type() == at::kFloat && I.fwd) {
    BlockIn in{sigma.data_ptr<float>(), t0.data_ptr<float>(), t1.data_ptr<float>(),
               feat.data_ptr<float>(), offs, cnts, L.R, L.S, L.C, (float)log_eps, early,
               unit_delta};
    FwdOut o{out.data_ptr<float>(), depth.data_ptr<float>(), opacity.data_ptr<float>(),
             want_weights ? weights.data_ptr<float>() : nullptr};
    const int64_t Wd = I.width, nblocks = (L.R + Wd - 1) / Wd;
    const size_t scratch = (size_t)((L.C * Wd + L.C) * Wd + 64);
    at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
      DenormalGuard guard;
      std::vector<float> buf(scratch);
      float* aligned = align64(buf.data());
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * Wd;
        I.fwd(in, o, r0, (int)std::min<int64_t>(Wd, L.R - r0), L.smax, aligned);
      }
    });
    return {out, depth, opacity, weights};
  }
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "neural3d_composite_forward", [&] {
    ScalarArgs<scalar_t> a{sigma.data_ptr<scalar_t>(), t0.data_ptr<scalar_t>(),
                           t1.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(), offs, cnts,
                           L.S, L.C, (scalar_t)log_eps, unit_delta};
    scalar_t* po = out.data_ptr<scalar_t>();
    scalar_t* pd = depth.data_ptr<scalar_t>();
    scalar_t* pa = opacity.data_ptr<scalar_t>();
    scalar_t* pw = want_weights ? weights.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, L.R, 16, [&](int64_t r0, int64_t r1) {
      DenormalGuard guard;
      for (int64_t r = r0; r < r1; ++r) forward_ray<scalar_t>(a, r, po, pd, pa, pw);
    });
  });
  return {out, depth, opacity, weights};
}

std::vector<at::Tensor> composite_backward(
    const at::Tensor& sigma, const at::Tensor& t0, const at::Tensor& t1, const at::Tensor& feat,
    const c10::optional<at::Tensor>& offsets, const c10::optional<at::Tensor>& counts,
    const at::Tensor& out, const at::Tensor& depth, const at::Tensor& opacity,
    const at::Tensor& g_out, const at::Tensor& g_depth, const at::Tensor& g_opacity,
    const c10::optional<at::Tensor>& g_weights, double stop_eps, bool unit_delta) {
  const Layout L = check_inputs(sigma, t0, t1, feat, offsets, counts);
  for (const at::Tensor* t : {&out, &depth, &opacity, &g_out, &g_depth, &g_opacity}) {
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == sigma.scalar_type() &&
                    t->device().is_cpu(),
                "neural3d composite backward (cpp): bad saved/grad tensor");
  }
  TORCH_CHECK(g_out.numel() == L.R * L.C && g_depth.numel() == L.R && g_opacity.numel() == L.R,
              "neural3d composite backward (cpp): gradient shapes do not match");
  const bool has_gw = g_weights.has_value() && g_weights->defined();
  if (has_gw)
    TORCH_CHECK(g_weights->is_contiguous() && g_weights->sizes() == sigma.sizes() &&
                    g_weights->scalar_type() == sigma.scalar_type(),
                "neural3d composite backward (cpp): weights gradient must match densities");
  auto g_sigma = L.packed ? at::zeros_like(sigma) : at::empty_like(sigma);
  auto g_feat = L.packed ? at::zeros_like(feat) : at::empty_like(feat);
  if (L.R == 0) return {g_sigma, g_feat};
  const int64_t* offs = ptr_or_null(offsets);
  const int64_t* cnts = ptr_or_null(counts);
  const bool early = stop_eps > 0;
  const double log_eps = early ? std::log(stop_eps) : -std::numeric_limits<double>::infinity();
  const Isa& I = isa();
  if (sigma.scalar_type() == at::kFloat && I.bwd) {
    BlockIn in{sigma.data_ptr<float>(), t0.data_ptr<float>(), t1.data_ptr<float>(),
               feat.data_ptr<float>(), offs, cnts, L.R, L.S, L.C, (float)log_eps, early,
               unit_delta};
    BwdIn gi{out.data_ptr<float>(), depth.data_ptr<float>(), opacity.data_ptr<float>(),
             g_out.data_ptr<float>(), g_depth.data_ptr<float>(), g_opacity.data_ptr<float>(),
             has_gw ? g_weights->data_ptr<float>() : nullptr};
    BwdOut o{g_sigma.data_ptr<float>(), g_feat.data_ptr<float>()};
    const int64_t Wd = I.width, nblocks = (L.R + Wd - 1) / Wd;
    const int64_t srnd = (L.smax + Wd - 1) / Wd * Wd;
    const size_t scratch = (size_t)((L.C * Wd + L.C) * Wd + 3 * srnd * Wd + 64);
    at::parallel_for(0, nblocks, 1, [&](int64_t b0, int64_t b1) {
      DenormalGuard guard;
      std::vector<float> buf(scratch);
      float* aligned = align64(buf.data());
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t r0 = b * Wd;
        I.bwd(in, gi, o, r0, (int)std::min<int64_t>(Wd, L.R - r0), L.smax, aligned);
      }
#ifdef N3D_X86
      _mm_sfence();  // order the streaming stores before the threads join
#endif
    });
    return {g_sigma, g_feat};
  }
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "neural3d_composite_backward", [&] {
    ScalarArgs<scalar_t> a{sigma.data_ptr<scalar_t>(), t0.data_ptr<scalar_t>(),
                           t1.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(), offs, cnts,
                           L.S, L.C, (scalar_t)log_eps, unit_delta};
    const scalar_t* pgw = has_gw ? g_weights->data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, L.R, 16, [&](int64_t r0, int64_t r1) {
      DenormalGuard guard;
      for (int64_t r = r0; r < r1; ++r)
        backward_ray<scalar_t>(a, r, out.data_ptr<scalar_t>(), depth.data_ptr<scalar_t>(),
                               opacity.data_ptr<scalar_t>(), g_out.data_ptr<scalar_t>(),
                               g_depth.data_ptr<scalar_t>(), g_opacity.data_ptr<scalar_t>(), pgw,
                               g_sigma.data_ptr<scalar_t>(), g_feat.data_ptr<scalar_t>());
    });
  });
  return {g_sigma, g_feat};
}

std::string simd_isa() { return isa().name; }

// How many threads at::parallel_for actually runs on (1 when this module was compiled without
// OpenMP: ATen's parallel region is inline in its headers and is then compiled out).
int64_t parallel_threads() {
  std::vector<char> seen(std::max<int64_t>(at::get_num_threads(), 1) + 1, 0);
  at::parallel_for(0, 1 << 14, 1, [&](int64_t, int64_t) {
    const int64_t t = at::get_thread_num();
    seen[std::min<int64_t>(t, (int64_t)seen.size() - 1)] = 1;
  });
  int64_t n = 0;
  for (char c : seen) n += c;
  return n;
}

void register_triplane(pybind11::module_& m);  // triplane_cpu.cpp

}  // namespace n3d

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "neural3d fused kernels (C++ CPU): compositing, triplane sampling";
  m.def("composite_forward", &n3d::composite_forward, "forward (feat, depth, opacity, weights)");
  m.def("composite_backward", &n3d::composite_backward, "backward (grad_sigma, grad_feat)");
  m.def("simd_isa", &n3d::simd_isa, "vector ISA chosen at run time");
  m.def("parallel_threads", &n3d::parallel_threads,
        "threads that at::parallel_for uses in this module (1 without OpenMP)");
  n3d::register_triplane(m);
}
