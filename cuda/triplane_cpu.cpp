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
struct Isa {
  const char* name;
  FwdFn fwd;
  BwdFn bwd;
};

// The same choice as the compositing kernels, NEURAL3D_CPU_ISA=baseline|avx2 included.
static const Isa& isa() {
  static const Isa chosen = [] {
    Isa base{"baseline", isa_base::forward_range<float>, isa_base::backward_range<float>};
#ifdef N3D_TP_MULTI
    __builtin_cpu_init();
    const char* env = std::getenv("NEURAL3D_CPU_ISA");
    const std::string want = env ? env : "";
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (want == "baseline" || want == "scalar") return base;
    if (want != "avx2" && __builtin_cpu_supports("avx512f"))
      return Isa{"avx512", isa_avx512::forward_range<float>, isa_avx512::backward_range<float>};
    if (avx2) return Isa{"avx2", isa_avx2::forward_range<float>, isa_avx2::backward_range<float>};
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
  TORCH_CHECK(planes.dim() == 5 && planes.size(1) == 3,
              "neural3d triplane (cpp): planes must be [B, 3, C, H, W]");
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

at::Tensor triplane_forward(const at::Tensor& planes, const at::Tensor& points, int64_t agg) {
  const Shape s = check(planes, points, agg);
  auto out = at::empty({s.B, s.N, agg == kConcat ? 3 * s.C : s.C}, points.options());
  const int64_t total = s.B * s.N;
  if (total == 0 || s.C == 0) return out.zero_();
  const at::Tensor pcl = channels_last(planes);
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_forward", [&] {
    TriArgs<scalar_t> a{pcl.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), s.B, s.N, s.C,
                        s.H, s.W, (int)agg};
    scalar_t* po = out.data_ptr<scalar_t>();
    at::parallel_for(0, total, kMinPointsPerThread, [&](int64_t i0, int64_t i1) {
      run_forward<scalar_t>(a, po, i0, i1);
    });
  });
  return out;
}

std::vector<at::Tensor> triplane_backward(const at::Tensor& planes, const at::Tensor& points,
                                          const at::Tensor& g_out, int64_t agg, bool want_planes,
                                          bool want_points) {
  const Shape s = check(planes, points, agg);
  TORCH_CHECK(g_out.is_contiguous() && g_out.scalar_type() == points.scalar_type() &&
                  g_out.numel() == s.B * s.N * (agg == kConcat ? 3 : 1) * s.C,
              "neural3d triplane backward (cpp): bad output gradient");
  const int64_t total = s.B * s.N;
  const int64_t plane3 = 3 * s.H * s.W * s.C;  // elements of one batch element's planes
  // the plane gradient, channels-last; returned as a [B, 3, C, H, W] view of it
  at::Tensor g_cl = want_planes ? at::zeros({s.B, 3, s.H, s.W, s.C}, planes.options())
                                : at::Tensor();
  at::Tensor g_points = want_points ? at::empty_like(points) : at::Tensor();
  if (want_points && (total == 0 || s.C == 0)) g_points.zero_();
  auto result = [&] {
    return std::vector<at::Tensor>{want_planes ? g_cl.permute({0, 1, 4, 2, 3}) : at::Tensor(),
                                   g_points};
  };
  if (total == 0 || plane3 == 0 || !(want_planes || want_points)) return result();
  // Thread ranges over the flat points, and each range's batch elements [b_lo, b_hi].
  const int64_t esize = (int64_t)points.element_size();
  int64_t G = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(),
                                                      total / kMinPointsPerThread));
  while (G > 1 && (G - 1) * plane3 * esize > kTileBudget) --G;
  std::vector<int64_t> lo(G + 1), tile_off(G + 1, 0);  // tile g >= 1 at tiles + tile_off[g]
  for (int64_t g = 0; g <= G; ++g) lo[g] = total * g / G;
  for (int64_t g = 1; g < G; ++g) {
    const int64_t nb = lo[g + 1] > lo[g] ? (lo[g + 1] - 1) / s.N - lo[g] / s.N + 1 : 0;
    tile_off[g + 1] = tile_off[g] + (want_planes ? nb * plane3 : 0);
  }
  at::Tensor tiles = at::empty({tile_off[G]}, points.options());  // channels-last gradients
  const at::Tensor pcl = want_points ? channels_last(planes) : planes;  // read with kPts only
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_backward", [&] {
    TriArgs<scalar_t> a{pcl.data_ptr<scalar_t>(), points.data_ptr<scalar_t>(), s.B, s.N, s.C,
                        s.H, s.W, (int)agg};
    TriGrads<scalar_t> gr{g_out.data_ptr<scalar_t>(),
                          want_points ? g_points.data_ptr<scalar_t>() : nullptr};
    scalar_t* pt = tiles.data_ptr<scalar_t>();
    scalar_t* gp = want_planes ? g_cl.data_ptr<scalar_t>() : nullptr;
    at::parallel_for(0, G, 1, [&](int64_t g0, int64_t g1) {
      for (int64_t g = g0; g < g1; ++g) {
        scalar_t* tile = !want_planes ? nullptr : g == 0 ? gp : pt + tile_off[g];
        if (tile && g > 0) std::fill(tile, pt + tile_off[g + 1], scalar_t(0));  // first touch
        run_backward<scalar_t>(a, gr, tile, lo[g] / s.N, lo[g], lo[g + 1]);
      }
    });
    if (!want_planes || G == 1) return;
    // Add the other tiles into the gradient row by row ((b, p, h): W * C channels-last values).
    const int64_t WC = s.W * s.C, plane = s.H * WC;
    at::parallel_for(0, s.B * 3 * s.H, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / (3 * s.H), ph = r % (3 * s.H), p = ph / s.H, h = ph % s.H;
        scalar_t* dst = gp + b * plane3 + p * plane + h * WC;
        for (int64_t g = 1; g < G; ++g) {
          const int64_t blo = lo[g] / s.N;
          if (lo[g + 1] == lo[g] || b < blo || b > (lo[g + 1] - 1) / s.N) continue;
          const scalar_t* src = pt + tile_off[g] + (b - blo) * plane3 + p * plane + h * WC;
          for (int64_t k = 0; k < WC; ++k) dst[k] += src[k];
        }
      }
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
  m.def("triplane_isa", &tp::triplane_isa, "vector ISA of the triplane kernels");
}

}  // namespace n3d
