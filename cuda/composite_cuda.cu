// neural3d: emission-absorption compositing on CUDA (forward and backward).
//
// One warp per ray: the 32 lanes take 32 consecutive samples (coalesced loads of densities,
// intervals and features), a warp inclusive scan gives the exclusive optical depth within the
// chunk, and a per-ray carry links the chunks. Transmittance is log-space (T = exp(-excl)); the
// backward recomputes it (nothing per sample is stored) and uses the suffix form
// dL/dtau_k = T_{k+1} g_k - sum_{i>k} w_i g_i, with the suffix = total - prefix (both summed in
// double in-kernel: a first pass for the total, a warp scan for the prefix). Early termination
// (T_i < stop_eps) is decided by the same arithmetic in forward and backward. Same semantics as
// composite_cpu.cpp.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAGuard.h>

#include <cmath>
#include <limits>
#include <vector>

namespace n3d_cuda {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kWarp = 32;
constexpr int kThreads = 256;  // 8 rays per block

__device__ __forceinline__ float d_exp(float x) { return expf(x); }
__device__ __forceinline__ double d_exp(double x) { return exp(x); }
__device__ __forceinline__ float d_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double d_expm1(double x) { return expm1(x); }

template <typename T>
__device__ __forceinline__ T warp_incl_scan(T v, int lane) {
#pragma unroll
  for (int o = 1; o < kWarp; o <<= 1) {
    T u = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += u;
  }
  return v;
}

template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int o = kWarp / 2; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

template <typename T>
struct Args {
  const T* sigma;
  const T* t0;
  const T* t1;
  const T* feat;
  const int64_t* offsets;
  const int64_t* counts;
  int64_t R, S, C;
  T log_eps;
  bool early_stop;
  bool unit_delta;
};

// CC > 0: the channel count compiled in; each lane then sums w * feat for its own samples in
// registers across the chunks and the warp reduces once per ray. CC == 0: any C, reduced per chunk.
template <typename T, int CC>
__global__ void forward_kernel(Args<T> a, T* __restrict__ out, T* __restrict__ depth,
                               T* __restrict__ opacity, T* __restrict__ weights) {
  const int64_t ray = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x & (kWarp - 1);
  if (ray >= a.R) return;  // uniform per warp
  const int64_t off = a.offsets ? a.offsets[ray] : ray * a.S;
  const int64_t n = a.counts ? a.counts[ray] : a.S;
  const int64_t C = CC > 0 ? CC : a.C;
  T carry = 0, acc_d = 0, acc_o = 0;
  T acc_f[CC > 0 ? CC : 1] = {};
  for (int64_t base = 0; base < n; base += kWarp) {
    if (a.early_stop && !(carry >= a.log_eps)) break;  // carry is uniform across the warp
    const int64_t s = base + lane;
    const bool valid = s < n;
    const int64_t i = off + s;
    T tau = 0, mid = 0;
    if (valid) {
      const T lo = __ldg(a.t0 + i), hi = __ldg(a.t1 + i);
      tau = a.unit_delta ? __ldg(a.sigma + i) : __ldg(a.sigma + i) * (hi - lo);
      mid = T(0.5) * (lo + hi);
    }
    const T incl = warp_incl_scan(tau, lane);
    T excl = __shfl_up_sync(kFull, incl, 1);
    if (lane == 0) excl = 0;
    const T logT = carry - excl;
    const bool active = valid && logT >= a.log_eps;
    const T w = active ? d_exp(logT) * -d_expm1(-tau) : T(0);
    if (weights && valid) weights[i] = w;
    acc_o += w;
    acc_d += w * mid;
    if constexpr (CC > 0) {
      if (valid) {
#pragma unroll
        for (int c = 0; c < CC; ++c) acc_f[c] += w * __ldg(a.feat + i * CC + c);
      }
    } else {
      for (int64_t c = 0; c < C; ++c) {
        T v = valid ? w * a.feat[i * C + c] : T(0);
        v = warp_sum(v);
        if (lane == 0) out[ray * C + c] += v;
      }
    }
    carry -= __shfl_sync(kFull, incl, kWarp - 1);
  }
  if constexpr (CC > 0) {
#pragma unroll
    for (int c = 0; c < CC; ++c) {
      const T v = warp_sum(acc_f[c]);
      if (lane == 0) out[ray * CC + c] = v;
    }
  }
  acc_o = warp_sum(acc_o);
  acc_d = warp_sum(acc_d);
  if (lane == 0) {
    opacity[ray] = acc_o;
    depth[ray] = acc_d;
  }
}

// Per-sample quantities shared by both backward passes (identical arithmetic in each).
template <typename T>
struct SampleGrad {
  T w, Tn, gi, dl;
  bool active, valid;
};

template <typename T>
__device__ __forceinline__ SampleGrad<T> sample_grad(const Args<T>& a, int64_t i, bool valid,
                                                     T carry, int lane, T& chunk_tau, T gd,
                                                     T gop, const T* __restrict__ g_out,
                                                     const T* __restrict__ g_weights,
                                                     int64_t ray, T* __restrict__ g_feat) {
  SampleGrad<T> r;
  T tau = 0, mid = 0, dl = 0;
  if (valid) {
    const T lo = a.t0[i], hi = a.t1[i];
    dl = a.unit_delta ? T(1) : hi - lo;
    tau = a.sigma[i] * dl;
    mid = T(0.5) * (lo + hi);
  }
  const T incl = warp_incl_scan(tau, lane);
  T excl = __shfl_up_sync(kFull, incl, 1);
  if (lane == 0) excl = 0;
  const T logT = carry - excl;
  r.valid = valid;
  r.active = valid && logT >= a.log_eps;
  r.w = r.active ? d_exp(logT) * -d_expm1(-tau) : T(0);
  r.Tn = d_exp(logT - tau);
  r.dl = dl;
  T gi = gd * mid + gop;
  if (g_weights && valid) gi += g_weights[i];
  for (int64_t c = 0; c < a.C; ++c) {
    const T go = g_out[ray * a.C + c];
    if (valid) {
      gi += go * a.feat[i * a.C + c];
      if (g_feat) g_feat[i * a.C + c] = r.w * go;
    }
  }
  r.gi = gi;
  chunk_tau = __shfl_sync(kFull, incl, kWarp - 1);
  return r;
}

// Backward, two passes over the ray: the first sums total = sum_i w_i g_i, the second scans the
// prefix and writes dL/dsigma_k = (T_{k+1} g_k - (total - prefix_k)) dt_k and dL/dfeat = w g_out.
// total and prefix are accumulated in double from the same per-sample products, so the
// difference does not cancel catastrophically once the ray is opaque (fp32 would).
template <typename T>
__global__ void backward_kernel(Args<T> a, const T* __restrict__ g_out,
                                const T* __restrict__ g_depth, const T* __restrict__ g_opacity,
                                const T* __restrict__ g_weights, T* __restrict__ g_sigma,
                                T* __restrict__ g_feat) {
  const int64_t ray = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) / kWarp;
  const int lane = threadIdx.x & (kWarp - 1);
  if (ray >= a.R) return;
  const int64_t off = a.offsets ? a.offsets[ray] : ray * a.S;
  const int64_t n = a.counts ? a.counts[ray] : a.S;
  const T gd = g_depth[ray], gop = g_opacity[ray];
  double total = 0;
  {
    T carry = 0;
    for (int64_t base = 0; base < n; base += kWarp) {
      if (a.early_stop && !(carry >= a.log_eps)) break;
      const int64_t s = base + lane;
      T chunk_tau;
      const SampleGrad<T> r = sample_grad(a, off + s, s < n, carry, lane, chunk_tau, gd, gop,
                                          g_out, g_weights, ray, (T*)nullptr);
      total += (double)(r.w * r.gi);
      carry -= chunk_tau;
    }
    total = warp_sum(total);
  }
  T carry = 0;
  double pcarry = 0;
  for (int64_t base = 0; base < n; base += kWarp) {
    if (a.early_stop && !(carry >= a.log_eps)) break;  // gradients were zero-initialised
    const int64_t s = base + lane;
    const int64_t i = off + s;
    T chunk_tau;
    const SampleGrad<T> r = sample_grad(a, i, s < n, carry, lane, chunk_tau, gd, gop, g_out,
                                        g_weights, ray, g_feat);
    const double pincl = warp_incl_scan((double)(r.w * r.gi), lane);
    const double suffix = total - (pcarry + pincl);
    if (r.valid) g_sigma[i] = r.active ? (r.Tn * r.gi - (T)suffix) * r.dl : T(0);
    carry -= chunk_tau;
    pcarry += __shfl_sync(kFull, pincl, kWarp - 1);
  }
}

struct Layout {
  int64_t R, S, C;
};

static Layout check(const at::Tensor& sigma, const at::Tensor& t0, const at::Tensor& t1,
                    const at::Tensor& feat, const c10::optional<at::Tensor>& offsets,
                    const c10::optional<at::Tensor>& counts) {
  for (const at::Tensor* t : {&sigma, &t0, &t1, &feat}) {
    TORCH_CHECK(t->is_cuda() && t->device() == sigma.device(),
                "neural3d composite (cuda): tensors must be on one CUDA device");
    TORCH_CHECK(t->is_contiguous(), "neural3d composite (cuda): tensors must be contiguous");
    TORCH_CHECK(t->scalar_type() == sigma.scalar_type(),
                "neural3d composite (cuda): all inputs must share one dtype");
  }
  TORCH_CHECK(t0.sizes() == sigma.sizes() && t1.sizes() == sigma.sizes(),
              "neural3d composite (cuda): t_starts/t_ends must match densities");
  Layout L{};
  if (offsets.has_value() && offsets->defined()) {
    TORCH_CHECK(counts.has_value() && counts->defined(), "packed layout needs counts");
    TORCH_CHECK(offsets->is_cuda() && counts->is_cuda() && offsets->scalar_type() == at::kLong &&
                    counts->scalar_type() == at::kLong && offsets->is_contiguous() &&
                    counts->is_contiguous() && offsets->numel() == counts->numel(),
                "packed layout: offsets/counts must be contiguous int64 CUDA [R]");
    TORCH_CHECK(sigma.dim() == 1 && feat.dim() == 2 && feat.size(0) == sigma.size(0),
                "packed layout: densities [N], features [N, C]");
    L = {offsets->numel(), 0, feat.size(1)};
  } else {
    TORCH_CHECK(sigma.dim() == 2 && feat.dim() == 3 && feat.size(0) == sigma.size(0) &&
                    feat.size(1) == sigma.size(1),
                "padded layout: densities [R, S], features [R, S, C]");
    L = {sigma.size(0), sigma.size(1), feat.size(2)};
  }
  return L;
}

static const int64_t* ptr(const c10::optional<at::Tensor>& t) {
  return (t.has_value() && t->defined()) ? t->data_ptr<int64_t>() : nullptr;
}

static dim3 grid_for(int64_t R) {
  return dim3((unsigned)((R * kWarp + kThreads - 1) / kThreads));
}

std::vector<at::Tensor> composite_forward_cuda(const at::Tensor& sigma, const at::Tensor& t0,
                                               const at::Tensor& t1, const at::Tensor& feat,
                                               const c10::optional<at::Tensor>& offsets,
                                               const c10::optional<at::Tensor>& counts,
                                               double stop_eps, bool unit_delta,
                                               bool want_weights) {
  const Layout L = check(sigma, t0, t1, feat, offsets, counts);
  const c10::cuda::CUDAGuard guard(sigma.device());
  auto out = at::zeros({L.R, L.C}, sigma.options());
  auto depth = at::zeros({L.R}, sigma.options());
  auto opacity = at::zeros({L.R}, sigma.options());
  auto weights = want_weights ? at::zeros_like(sigma) : at::empty({0}, sigma.options());
  if (L.R == 0) return {out, depth, opacity, weights};
  const bool early = stop_eps > 0;
  const double log_eps = early ? std::log(stop_eps) : -std::numeric_limits<double>::infinity();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "neural3d_composite_forward_cuda", [&] {
    Args<scalar_t> a{sigma.data_ptr<scalar_t>(), t0.data_ptr<scalar_t>(),
                     t1.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(), ptr(offsets),
                     ptr(counts), L.R, L.S, L.C, (scalar_t)log_eps, early, unit_delta};
    scalar_t* w = want_weights ? weights.data_ptr<scalar_t>() : nullptr;
    const auto launch = [&](auto kernel) {
      kernel<<<grid_for(L.R), kThreads, 0, stream>>>(a, out.data_ptr<scalar_t>(),
                                                     depth.data_ptr<scalar_t>(),
                                                     opacity.data_ptr<scalar_t>(), w);
    };
    if (L.C == 1) launch(forward_kernel<scalar_t, 1>);
    else if (L.C == 3) launch(forward_kernel<scalar_t, 3>);
    else if (L.C == 4) launch(forward_kernel<scalar_t, 4>);
    else launch(forward_kernel<scalar_t, 0>);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {out, depth, opacity, weights};
}

std::vector<at::Tensor> composite_backward_cuda(
    const at::Tensor& sigma, const at::Tensor& t0, const at::Tensor& t1, const at::Tensor& feat,
    const c10::optional<at::Tensor>& offsets, const c10::optional<at::Tensor>& counts,
    const at::Tensor& out, const at::Tensor& depth, const at::Tensor& opacity,
    const at::Tensor& g_out, const at::Tensor& g_depth, const at::Tensor& g_opacity,
    const c10::optional<at::Tensor>& g_weights, double stop_eps, bool unit_delta) {
  const Layout L = check(sigma, t0, t1, feat, offsets, counts);
  for (const at::Tensor* t : {&out, &depth, &opacity, &g_out, &g_depth, &g_opacity})
    TORCH_CHECK(t->is_cuda() && t->is_contiguous() && t->scalar_type() == sigma.scalar_type(),
                "neural3d composite backward (cuda): bad saved/grad tensor");
  TORCH_CHECK(g_out.numel() == L.R * L.C && g_depth.numel() == L.R && g_opacity.numel() == L.R,
              "neural3d composite backward (cuda): gradient shapes do not match");
  const bool has_gw = g_weights.has_value() && g_weights->defined();
  if (has_gw)
    TORCH_CHECK(g_weights->is_cuda() && g_weights->is_contiguous() &&
                    g_weights->sizes() == sigma.sizes(),
                "neural3d composite backward (cuda): weights gradient must match densities");
  const c10::cuda::CUDAGuard guard(sigma.device());
  auto g_sigma = at::zeros_like(sigma);
  auto g_feat = at::zeros_like(feat);
  if (L.R == 0) return {g_sigma, g_feat};
  const bool early = stop_eps > 0;
  const double log_eps = early ? std::log(stop_eps) : -std::numeric_limits<double>::infinity();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(sigma.scalar_type(), "neural3d_composite_backward_cuda", [&] {
    Args<scalar_t> a{sigma.data_ptr<scalar_t>(), t0.data_ptr<scalar_t>(),
                     t1.data_ptr<scalar_t>(), feat.data_ptr<scalar_t>(), ptr(offsets),
                     ptr(counts), L.R, L.S, L.C, (scalar_t)log_eps, early, unit_delta};
    backward_kernel<scalar_t><<<grid_for(L.R), kThreads, 0, stream>>>(
        a, g_out.data_ptr<scalar_t>(), g_depth.data_ptr<scalar_t>(), g_opacity.data_ptr<scalar_t>(),
        has_gw ? g_weights->data_ptr<scalar_t>() : nullptr, g_sigma.data_ptr<scalar_t>(),
        g_feat.data_ptr<scalar_t>());
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {g_sigma, g_feat};
}

}  // namespace n3d_cuda
