// neural3d: fused triplane sampling on the CPU (forward and backward).
//
// features[b, n] = aggregate over p of bilinear(planes[b, p], points[b, n, PLANE_AXES[p]]) with
// grid_sample's conventions (see triplane_simd.h); aggregate = sum, mean or concat.
//
// Layout: the planes [B, 3, C, H, W] are transposed once per call to channels-last
// [B, 3, H, W, C] (a copy of the planes, small next to the per-point work), so each bilinear tap
// reads and writes four contiguous C-vectors. The per-point loops are compiled for baseline
// x86-64 / AVX2+FMA / AVX-512 (as the compositing kernels) and chosen at run time; double runs
// the baseline variant (gradcheck). Threads: at::parallel_for (OpenMP) over points.
//
// Backward: the points are split into G contiguous ranges, one per thread; each range
// accumulates its plane gradient into its own channels-last tile, covering only the batch
// elements its points belong to, with no atomics. The first range's tile is the returned
// gradient itself: a channels-last [B, 3, H, W, C] buffer handed back as a [B, 3, C, H, W] view
// (strides, not a copy); the other G - 1 tiles (about G - 1 plane sets) are added into it row by
// row. G is capped so those tiles stay under kTileBudget bytes.
//
// triplane_linear_*: the same sampling with the first decoder layer (a linear layer F -> Hd)
// fused behind it, so the [B, N, F] features are never written (sampled per chunk of points
// into an L1-sized buffer); its backward recomputes them chunk by chunk for the weight gradient
// (per-thread [F, Hd] accumulators, summed at the end) and shares the plane-gradient tiles above.
#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <string>
#include <vector>

namespace n3d {
namespace tp {

enum Aggregate : int { kSum = 0, kMean = 1, kConcat = 2 };

template <typename T>
struct TriArgs {
  const T* planes;  // channels-last [B, 3, H, W, C]
  const T* points;  // [B, N, 3], normalised to [-1, 1]
  int64_t B, N, C, H, W;
  int agg;
};

template <typename T>
struct TriGrads {
  const T* g_out;  // [B, N, C] or [B, N, 3C]
  T* g_points;     // [B, N, 3] or null
};

template <typename T>
struct LinArgs {
  const T* weight_t;  // [F, Hd]: nn.Linear's weight [Hd, F] transposed
  const T* bias;      // [Hd]
  int64_t F, Hd;
};

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define N3D_TP_MULTI 1
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace isa_avx512 {
#include "triplane_simd.h"
}  // namespace isa_avx512
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
#include "triplane_simd.h"
}  // namespace isa_avx2
#pragma GCC pop_options
#endif
namespace isa_base {
#include "triplane_simd.h"
}  // namespace isa_base

using FwdFn = void (*)(const TriArgs<float>&, float*, int64_t, int64_t);
using BwdFn = void (*)(const TriArgs<float>&, const TriGrads<float>&, float*, int64_t, int64_t,
                       int64_t);
using LinFwdFn = void (*)(const TriArgs<float>&, const LinArgs<float>&, float*, int64_t, int64_t);
using LinBwdFn = void (*)(const TriArgs<float>&, const LinArgs<float>&, const float*, float*,
                          float*, int64_t, float*, float*, int64_t, int64_t);
struct Isa {
  const char* name;
  FwdFn fwd;
  BwdFn bwd;
  LinFwdFn lin_fwd;
  LinBwdFn lin_bwd;
};
#define N3D_TP_ISA(name, ns)                                                              \
  Isa {                                                                                   \
    name, ns::forward_range<float>, ns::backward_range<float>,                            \
        ns::linear_forward_range<float>, ns::linear_backward_range<float>                 \
  }

// The same choice as the compositing kernels, NEURAL3D_CPU_ISA=baseline|avx2 included.
static const Isa& isa() {
  static const Isa chosen = [] {
    const Isa base = N3D_TP_ISA("baseline", isa_base);
#ifdef N3D_TP_MULTI
    __builtin_cpu_init();
    const char* env = std::getenv("NEURAL3D_CPU_ISA");
    const std::string want = env ? env : "";
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (want == "baseline" || want == "scalar") return base;
    if (want != "avx2" && __builtin_cpu_supports("avx512f"))
      return N3D_TP_ISA("avx512", isa_avx512);
    if (avx2) return N3D_TP_ISA("avx2", isa_avx2);
#endif
    return base;
  }();
  return chosen;
}

// float: the chosen ISA; double: the baseline variant.
template <typename T>
static void run_forward(const TriArgs<T>& a, T* out, int64_t i0, int64_t i1) {
  isa_base::forward_range<T>(a, out, i0, i1);
}
template <>
void run_forward<float>(const TriArgs<float>& a, float* out, int64_t i0, int64_t i1) {
  isa().fwd(a, out, i0, i1);
}
template <typename T>
static void run_backward(const TriArgs<T>& a, const TriGrads<T>& g, T* tile, int64_t b_lo,
                         int64_t i0, int64_t i1) {
  isa_base::backward_range<T>(a, g, tile, b_lo, i0, i1);
}
template <>
void run_backward<float>(const TriArgs<float>& a, const TriGrads<float>& g, float* tile,
                         int64_t b_lo, int64_t i0, int64_t i1) {
  isa().bwd(a, g, tile, b_lo, i0, i1);
}
template <typename T>
static void run_linear_forward(const TriArgs<T>& a, const LinArgs<T>& l, T* out, int64_t i0,
                               int64_t i1) {
  isa_base::linear_forward_range<T>(a, l, out, i0, i1);
}
template <>
void run_linear_forward<float>(const TriArgs<float>& a, const LinArgs<float>& l, float* out,
                               int64_t i0, int64_t i1) {
  isa().lin_fwd(a, l, out, i0, i1);
}
template <typename T>
static void run_linear_backward(const TriArgs<T>& a, const LinArgs<T>& l, const T* g_h,
                                T* g_points, T* tile, int64_t b_lo, T* g_weight_t, T* g_bias,
                                int64_t i0, int64_t i1) {
  isa_base::linear_backward_range<T>(a, l, g_h, g_points, tile, b_lo, g_weight_t, g_bias, i0,
                                     i1);
}
template <>
void run_linear_backward<float>(const TriArgs<float>& a, const LinArgs<float>& l,
                                const float* g_h, float* g_points, float* tile, int64_t b_lo,
                                float* g_weight_t, float* g_bias, int64_t i0, int64_t i1) {
  isa().lin_bwd(a, l, g_h, g_points, tile, b_lo, g_weight_t, g_bias, i0, i1);
}

constexpr int64_t kTileBudget = int64_t(256) << 20;  // bytes of per-thread gradient tiles
constexpr int64_t kMinPointsPerThread = 1024;

struct Shape {
  int64_t B, N, C, H, W;
};

static Shape check(const at::Tensor& planes, const at::Tensor& points, int64_t agg) {
  TORCH_CHECK(planes.device().is_cpu() && points.device().is_cpu(),
              "neural3d triplane (cpp): tensors must be on the CPU");
  TORCH_CHECK(planes.scalar_type() == points.scalar_type() &&
                  (planes.scalar_type() == at::kFloat || planes.scalar_type() == at::kDouble),
              "neural3d triplane (cpp): planes and points must share one dtype, float32/64");
  TORCH_CHECK(planes.dim() == 5 && planes.size(1) == 3 && planes.size(3) > 0 &&
                  planes.size(4) > 0,
              "neural3d triplane (cpp): planes must be [B, 3, C, H, W] with H, W >= 1");
  TORCH_CHECK(points.dim() == 3 && points.size(0) == planes.size(0) && points.size(2) == 3,
              "neural3d triplane (cpp): points must be [B, N, 3]");
  TORCH_CHECK(points.is_contiguous(), "neural3d triplane (cpp): points must be contiguous");
  TORCH_CHECK(agg == kSum || agg == kMean || agg == kConcat,
              "neural3d triplane (cpp): aggregate must be 0 (sum), 1 (mean) or 2 (concat)");
  return {planes.size(0), points.size(1), planes.size(2), planes.size(3), planes.size(4)};
}

static at::Tensor channels_last(const at::Tensor& planes) {
  return planes.permute({0, 1, 3, 4, 2}).contiguous();
}

static int64_t feature_width(const Shape& s, int64_t agg) {
  return agg == kConcat ? 3 * s.C : s.C;
}

at::Tensor triplane_forward(const at::Tensor& planes, const at::Tensor& points, int64_t agg) {
  const Shape s = check(planes, points, agg);
  const int64_t F = feature_width(s, agg);
  auto out = at::empty({s.B, s.N, F}, points.options());
  const int64_t total = s.B * s.N;
  if (total == 0 || s.C == 0) return out.zero_();
  const at::Tensor pcl = channels_last(planes);
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_forward", [&] {
    TriArgs<scalar_t> a{pcl.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), s.B, s.N, s.C,
                        s.H, s.W, (int)agg};
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, total, kMinPointsPerThread, [&](int64_t i0, int64_t i1) {
      run_forward<scalar_t>(a, po + i0 * F, i0, i1);
    });
  });
  return out;
}

// The backward's thread ranges over the flat points: range g is [lo[g], lo[g + 1]); its plane-
// gradient tile (g >= 1; range 0 writes the returned gradient) starts at tile_off[g] and covers
// the batch elements of its points, from lo[g] / N on.
struct Ranges {
  int64_t G;
  std::vector<int64_t> lo, tile_off;
};

static Ranges plan_ranges(const Shape& s, bool want_planes, int64_t esize) {
  const int64_t total = s.B * s.N, plane3 = 3 * s.H * s.W * s.C;
  int64_t G = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(),
                                                      total / kMinPointsPerThread));
  while (G > 1 && (G - 1) * plane3 * esize > kTileBudget) --G;
  Ranges r{G, std::vector<int64_t>(G + 1), std::vector<int64_t>(G + 1, 0)};
  for (int64_t g = 0; g <= G; ++g) r.lo[g] = total * g / G;
  for (int64_t g = 1; g < G; ++g) {
    const int64_t nb = r.lo[g + 1] > r.lo[g] ? (r.lo[g + 1] - 1) / s.N - r.lo[g] / s.N + 1 : 0;
    r.tile_off[g + 1] = r.tile_off[g] + (want_planes ? nb * plane3 : 0);
  }
  return r;
}

// Runs range(g, tile, b_lo, i0, i1) for every range in parallel, each with its own zeroed plane-
// gradient tile (null when gp is null), then adds tiles 1..G-1 into gp (channels-last [B, 3, H,
// W, C], zeroed by the caller) row by row ((b, p, h): W * C values).
template <typename T, typename RangeFn>
static void run_ranges(const Shape& s, const Ranges& r, T* gp, T* tiles, const RangeFn& range) {
  at::parallel_for(0, r.G, 1, [&](int64_t g0, int64_t g1) {
    for (int64_t g = g0; g < g1; ++g) {
      T* tile = !gp ? nullptr : g == 0 ? gp : tiles + r.tile_off[g];
      if (tile && g > 0) std::fill(tile, tiles + r.tile_off[g + 1], T(0));  // first touch
      range(g, tile, r.lo[g] / s.N, r.lo[g], r.lo[g + 1]);
    }
  });
  if (!gp || r.G == 1) return;
  const int64_t WC = s.W * s.C, plane = s.H * WC, plane3 = 3 * plane;
  at::parallel_for(0, s.B * 3 * s.H, 16, [&](int64_t r0, int64_t r1) {
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t b = row / (3 * s.H), ph = row % (3 * s.H), p = ph / s.H, h = ph % s.H;
      T* dst = gp + b * plane3 + p * plane + h * WC;
      for (int64_t g = 1; g < r.G; ++g) {
        const int64_t blo = r.lo[g] / s.N;
        if (r.lo[g + 1] == r.lo[g] || b < blo || b > (r.lo[g + 1] - 1) / s.N) continue;
        const T* src = tiles + r.tile_off[g] + (b - blo) * plane3 + p * plane + h * WC;
        for (int64_t k = 0; k < WC; ++k) dst[k] += src[k];
      }
    }
  });
}

// The gradients both backwards return for the planes (channels-last, handed back as a
// [B, 3, C, H, W] view: strides, not a copy) and the points, and the per-range tiles.
struct SampleGrads {
  at::Tensor g_cl, g_points, tiles;
  at::Tensor planes_view() const { return g_cl.defined() ? g_cl.permute({0, 1, 4, 2, 3}) : g_cl; }
};

static SampleGrads sample_grads(const Shape& s, const Ranges& r, const at::Tensor& points,
                                bool want_planes, bool want_points) {
  SampleGrads out;
  if (want_planes) out.g_cl = at::zeros({s.B, 3, s.H, s.W, s.C}, points.options());
  if (want_points)  // every point's row is written, except when nothing is sampled
    out.g_points = s.B * s.N * s.C > 0 ? at::empty_like(points) : at::zeros_like(points);
  out.tiles = at::empty({r.tile_off[r.G]}, points.options());
  return out;
}

std::vector<at::Tensor> triplane_backward(const at::Tensor& planes, const at::Tensor& points,
                                          const at::Tensor& g_out, int64_t agg, bool want_planes,
                                          bool want_points) {
  const Shape s = check(planes, points, agg);
  const int64_t F = feature_width(s, agg);
  TORCH_CHECK(g_out.is_contiguous() && g_out.scalar_type() == points.scalar_type() &&
                  g_out.numel() == s.B * s.N * F,
              "neural3d triplane backward (cpp): bad output gradient");
  const Ranges r = plan_ranges(s, want_planes, (int64_t)points.element_size());
  SampleGrads sg = sample_grads(s, r, points, want_planes, want_points);
  if (s.B * s.N * s.C == 0 || !(want_planes || want_points))
    return {sg.planes_view(), sg.g_points};
  const at::Tensor pcl = want_points ? channels_last(planes) : planes;  // read with kPts only
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_backward", [&] {
    TriArgs<scalar_t> a{pcl.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), s.B, s.N, s.C,
                        s.H, s.W, (int)agg};
    const scalar_t* go = g_out.data_ptr<scalar_t>();
    scalar_t* gpts = want_points ? sg.g_points.data_ptr<scalar_t>() : nullptr;
    run_ranges<scalar_t>(
        s, r, want_planes ? sg.g_cl.data_ptr<scalar_t>() : nullptr, sg.tiles.data_ptr<scalar_t>(),
        [&](int64_t, scalar_t* tile, int64_t b_lo, int64_t i0, int64_t i1) {
          run_backward<scalar_t>(a, TriGrads<scalar_t>{go + i0 * F, gpts}, tile, b_lo, i0, i1);
        });
  });
  return {sg.planes_view(), sg.g_points};
}

static void check_linear(const at::Tensor& points, const at::Tensor& weight,
                         const at::Tensor& bias, int64_t F) {
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == F && bias.dim() == 1 &&
                  bias.size(0) == weight.size(0),
              "neural3d triplane_linear (cpp): weight must be [Hd, ", F, "] and bias [Hd]");
  TORCH_CHECK(weight.scalar_type() == points.scalar_type() &&
                  bias.scalar_type() == points.scalar_type() && weight.device().is_cpu() &&
                  bias.device().is_cpu(),
              "neural3d triplane_linear (cpp): weight and bias must be CPU tensors of the "
              "points' dtype");
}

at::Tensor triplane_linear_forward(const at::Tensor& planes, const at::Tensor& points,
                                   int64_t agg, const at::Tensor& weight,
                                   const at::Tensor& bias) {
  const Shape s = check(planes, points, agg);
  const int64_t F = feature_width(s, agg), Hd = weight.size(0);
  check_linear(points, weight, bias, F);
  const int64_t total = s.B * s.N;
  if (total == 0) return at::empty({s.B, s.N, Hd}, points.options());
  if (s.C == 0) return bias.expand({s.B, s.N, Hd}).contiguous();
  auto out = at::empty({s.B, s.N, Hd}, points.options());
  const at::Tensor pcl = channels_last(planes), wt = weight.t().contiguous(),
                   b = bias.contiguous();
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_linear_forward", [&] {
    TriArgs<scalar_t> a{pcl.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), s.B, s.N, s.C,
                        s.H, s.W, (int)agg};
    LinArgs<scalar_t> l{wt.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), F, Hd};
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, total, kMinPointsPerThread, [&](int64_t i0, int64_t i1) {
      run_linear_forward<scalar_t>(a, l, po + i0 * Hd, i0, i1);
    });
  });
  return out;
}

std::vector<at::Tensor> triplane_linear_backward(const at::Tensor& planes,
                                                 const at::Tensor& points, int64_t agg,
                                                 const at::Tensor& weight, const at::Tensor& bias,
                                                 const at::Tensor& g_h, bool want_planes,
                                                 bool want_points, bool want_weight,
                                                 bool want_bias) {
  const Shape s = check(planes, points, agg);
  const int64_t F = feature_width(s, agg), Hd = weight.size(0);
  check_linear(points, weight, bias, F);
  TORCH_CHECK(g_h.is_contiguous() && g_h.scalar_type() == points.scalar_type() &&
                  g_h.numel() == s.B * s.N * Hd,
              "neural3d triplane_linear backward (cpp): bad output gradient");
  const Ranges r = plan_ranges(s, want_planes, (int64_t)points.element_size());
  SampleGrads sg = sample_grads(s, r, points, want_planes, want_points);
  // per-range weight and bias gradients, summed over the ranges at the end
  at::Tensor g_wt = want_weight ? at::zeros({r.G, F, Hd}, points.options()) : at::Tensor();
  at::Tensor g_b = want_bias ? at::zeros({r.G, Hd}, points.options()) : at::Tensor();
  auto result = [&] {
    return std::vector<at::Tensor>{sg.planes_view(), sg.g_points,
                                   want_weight ? g_wt.sum(0).t().contiguous() : at::Tensor(),
                                   want_bias ? g_b.sum(0) : at::Tensor()};
  };
  if (s.B * s.N == 0 || !(want_planes || want_points || want_weight || want_bias))
    return result();
  // the planes are read (channels-last) to recompute the features and for the point gradients
  const at::Tensor pcl = want_weight || want_points ? channels_last(planes) : planes,
                   wt = weight.t().contiguous(), b = bias.contiguous();
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_linear_backward", [&] {
    TriArgs<scalar_t> a{pcl.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), s.B, s.N, s.C,
                        s.H, s.W, (int)agg};
    LinArgs<scalar_t> l{wt.data_ptr<scalar_t>(), b.data_ptr<scalar_t>(), F, Hd};
    const scalar_t* gh = g_h.data_ptr<scalar_t>();
    scalar_t* gpts = want_points ? sg.g_points.data_ptr<scalar_t>() : nullptr;
    scalar_t* gw = want_weight ? g_wt.data_ptr<scalar_t>() : nullptr;
    scalar_t* gb = want_bias ? g_b.data_ptr<scalar_t>() : nullptr;
    run_ranges<scalar_t>(
        s, r, want_planes ? sg.g_cl.data_ptr<scalar_t>() : nullptr, sg.tiles.data_ptr<scalar_t>(),
        [&](int64_t g, scalar_t* tile, int64_t b_lo, int64_t i0, int64_t i1) {
          run_linear_backward<scalar_t>(a, l, gh + i0 * Hd, gpts, tile, b_lo,
                                        gw ? gw + g * F * Hd : nullptr, gb ? gb + g * Hd : nullptr,
                                        i0, i1);
        });
  });
  return result();
}

std::string triplane_isa() { return isa().name; }

}  // namespace tp

void register_triplane(pybind11::module_& m) {
  m.def("triplane_forward", &tp::triplane_forward,
        "triplane sampling: planes [B,3,C,H,W], points [B,N,3] in [-1,1], aggregate "
        "(0 sum, 1 mean, 2 concat) -> [B,N,C or 3C]");
  m.def("triplane_backward", &tp::triplane_backward,
        "triplane sampling backward -> [grad_planes or undefined, grad_points or undefined]");
  m.def("triplane_linear_forward", &tp::triplane_linear_forward,
        "triplane sampling and a linear layer: planes, points, aggregate, weight [Hd,F], bias "
        "[Hd] -> [B,N,Hd]");
  m.def("triplane_linear_backward", &tp::triplane_linear_backward,
        "-> [grad_planes, grad_points, grad_weight, grad_bias] (undefined where not wanted)");
  m.def("triplane_isa", &tp::triplane_isa, "vector ISA of the triplane kernels");
}

}  // namespace n3d
