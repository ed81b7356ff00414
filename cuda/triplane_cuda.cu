// neural3d: fused triplane sampling on CUDA (forward and backward). Same semantics as
// triplane_cpu.cpp (grid_sample's bilinear, border padding, align_corners=False; aggregate sum,
// mean or concat; see triplane_simd.h for the conventions).
//
// One thread per point. The planes are read channels-last ([B, 3, H, W, C], transposed once per
// call), so a tap's four texels are four contiguous C-vectors (a few 32-byte sectors) instead of
// 4 C scattered words. Forward: nothing is stored for the backward. Backward: the plane gradient
// is accumulated with atomic adds (compiled to fire-and-forget reductions) into a channels-last
// buffer, transposed back at the end; the point gradient is each thread's own (no atomics);
// nothing of size [B, 3, N, C] is ever materialised.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>
#include <vector>

namespace n3d_cuda {
namespace {

constexpr int kThreads = 256;
enum Aggregate : int { kSum = 0, kMean = 1, kConcat = 2 };

template <typename T>
struct TriArgs {
  const T* planes;  // channels-last [B, 3, H, W, C]
  const T* points;  // [B, N, 3] in [-1, 1]
  int64_t B, N, C, H, W;
  int agg;
};

template <typename T>
struct Tap {
  int64_t o[4];
  T w[4];
  T ax, bx, ay, by, gx, gy;
};

template <typename T>
__device__ __forceinline__ void make_tap(T u, T v, int64_t H, int64_t Wd, int64_t C, Tap<T>& t) {
  T ix = ((u + T(1)) * T(Wd) - T(1)) / T(2);
  T iy = ((v + T(1)) * T(H) - T(1)) / T(2);
  t.gx = T(Wd) / T(2);
  t.gy = T(H) / T(2);
  if (!(ix > T(0))) { ix = T(0); t.gx = T(0); }
  else if (ix >= T(Wd - 1)) { ix = T(Wd - 1); t.gx = T(0); }
  if (!(iy > T(0))) { iy = T(0); t.gy = T(0); }
  else if (iy >= T(H - 1)) { iy = T(H - 1); t.gy = T(0); }
  const int64_t x0 = (int64_t)ix, y0 = (int64_t)iy;
  const int64_t x1 = x0 + (x0 < Wd - 1), y1 = y0 + (y0 < H - 1);
  t.ax = T(x0 + 1) - ix;
  t.bx = ix - T(x0);
  t.ay = T(y0 + 1) - iy;
  t.by = iy - T(y0);
  t.w[0] = t.ax * t.ay;
  t.w[1] = t.bx * t.ay;
  t.w[2] = t.ax * t.by;
  t.w[3] = t.bx * t.by;
  t.o[0] = (y0 * Wd + x0) * C;
  t.o[1] = (y0 * Wd + x1) * C;
  t.o[2] = (y1 * Wd + x0) * C;
  t.o[3] = (y1 * Wd + x1) * C;
}

// PLANE_AXES: plane p samples the point's axes (ax0(p), ax1(p)) = (0, 1), (0, 2), (1, 2).
__device__ __forceinline__ int ax0(int p) { return p == 2 ? 1 : 0; }
__device__ __forceinline__ int ax1(int p) { return p == 0 ? 1 : 2; }

template <typename T, int CC>
__global__ void forward_kernel(TriArgs<T> a, T* __restrict__ out) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.B * a.N) return;
  const int64_t C = CC > 0 ? CC : a.C;
  const int64_t plane = a.H * a.W * C;
  const int64_t b = i / a.N;
  const T* pt = a.points + i * 3;
  const T p3[3] = {__ldg(pt), __ldg(pt + 1), __ldg(pt + 2)};
  T* dst = out + i * (a.agg == kConcat ? 3 * C : C);
  T acc[CC > 0 ? CC : 1];
#pragma unroll
  for (int p = 0; p < 3; ++p) {
    Tap<T> t;
    make_tap<T>(p3[ax0(p)], p3[ax1(p)], a.H, a.W, C, t);
    const T* pl = a.planes + (b * 3 + p) * plane;
    if (CC > 0 && a.agg != kConcat) {
#pragma unroll
      for (int c = 0; c < (CC > 0 ? CC : 1); ++c) {
        const T v = t.w[0] * __ldg(pl + t.o[0] + c) + t.w[1] * __ldg(pl + t.o[1] + c) +
                    t.w[2] * __ldg(pl + t.o[2] + c) + t.w[3] * __ldg(pl + t.o[3] + c);
        acc[c] = p == 0 ? v : acc[c] + v;
      }
    } else {
      T* d = dst + (a.agg == kConcat ? p * C : 0);
      for (int64_t c = 0; c < C; ++c) {
        const T v = t.w[0] * __ldg(pl + t.o[0] + c) + t.w[1] * __ldg(pl + t.o[1] + c) +
                    t.w[2] * __ldg(pl + t.o[2] + c) + t.w[3] * __ldg(pl + t.o[3] + c);
        d[c] = (p == 0 || a.agg == kConcat) ? v : d[c] + v;
      }
    }
  }
  if (a.agg == kConcat) return;
  if (CC > 0) {
#pragma unroll
    for (int c = 0; c < (CC > 0 ? CC : 1); ++c) dst[c] = a.agg == kMean ? acc[c] / T(3) : acc[c];
  } else if (a.agg == kMean) {
    for (int64_t c = 0; c < C; ++c) dst[c] = dst[c] / T(3);
  }
}

// g_planes_cl: channels-last plane gradient (atomics; null: not wanted); g_points: null or
// [B, N, 3] (each thread writes its own point).
template <typename T, int CC>
__global__ void backward_kernel(TriArgs<T> a, const T* __restrict__ g_out, T* g_planes_cl,
                                T* __restrict__ g_points) {
  const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
  if (i >= a.B * a.N) return;
  const int64_t C = CC > 0 ? CC : a.C;
  const int64_t plane = a.H * a.W * C;
  const int64_t b = i / a.N;
  const T* pt = a.points + i * 3;
  const T p3[3] = {__ldg(pt), __ldg(pt + 1), __ldg(pt + 2)};
  const int64_t oc = a.agg == kConcat ? 3 * C : C;
  const T* go = g_out + i * oc;
  const T scale = a.agg == kMean ? T(1) / T(3) : T(1);
  T gp[3] = {T(0), T(0), T(0)};
#pragma unroll
  for (int p = 0; p < 3; ++p) {
    Tap<T> t;
    make_tap<T>(p3[ax0(p)], p3[ax1(p)], a.H, a.W, C, t);
    const T* gc = go + (a.agg == kConcat ? p * C : 0);
    const int64_t poff = (b * 3 + p) * plane;
    T du = T(0), dv = T(0);
#pragma unroll
    for (int64_t c = 0; c < C; ++c) {
      const T g = __ldg(gc + c) * scale;
      if (g_planes_cl) {
        T* q = g_planes_cl + poff + c;
        atomicAdd(q + t.o[0], t.w[0] * g);
        atomicAdd(q + t.o[1], t.w[1] * g);
        atomicAdd(q + t.o[2], t.w[2] * g);
        atomicAdd(q + t.o[3], t.w[3] * g);
      }
      if (g_points) {
        const T* r = a.planes + poff + c;
        const T r0 = __ldg(r + t.o[0]), r1 = __ldg(r + t.o[1]);
        const T r2 = __ldg(r + t.o[2]), r3 = __ldg(r + t.o[3]);
        du += g * (t.ay * (r1 - r0) + t.by * (r3 - r2));
        dv += g * (t.ax * (r2 - r0) + t.bx * (r3 - r1));
      }
    }
    gp[ax0(p)] += t.gx * du;
    gp[ax1(p)] += t.gy * dv;
  }
  if (g_points) {
    g_points[i * 3] = gp[0];
    g_points[i * 3 + 1] = gp[1];
    g_points[i * 3 + 2] = gp[2];
  }
}

void check(const at::Tensor& planes, const at::Tensor& points, int64_t agg) {
  TORCH_CHECK(planes.is_cuda() && points.is_cuda() && planes.device() == points.device(),
              "neural3d triplane (cuda): tensors must be on one CUDA device");
  TORCH_CHECK(planes.scalar_type() == points.scalar_type() &&
                  (planes.scalar_type() == at::kFloat || planes.scalar_type() == at::kDouble),
              "neural3d triplane (cuda): planes and points must share one dtype, float32/64");
  TORCH_CHECK(planes.dim() == 5 && planes.size(1) == 3,
              "neural3d triplane (cuda): planes must be [B, 3, C, H, W]");
  TORCH_CHECK(points.dim() == 3 && points.size(0) == planes.size(0) && points.size(2) == 3,
              "neural3d triplane (cuda): points must be [B, N, 3]");
  TORCH_CHECK(points.is_contiguous(), "neural3d triplane (cuda): points must be contiguous");
  TORCH_CHECK(agg == kSum || agg == kMean || agg == kConcat,
              "neural3d triplane (cuda): aggregate must be 0 (sum), 1 (mean) or 2 (concat)");
}

unsigned grid_for(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

template <typename T>
TriArgs<T> args_of(const at::Tensor& pcl, const at::Tensor& points, int64_t agg) {
  return {pcl.data_ptr<T>(), points.data_ptr<T>(), pcl.size(0), points.size(1), pcl.size(4),
          pcl.size(2), pcl.size(3), (int)agg};
}

// Calls f.template operator()<CC>() for the specialised channel counts, <0> otherwise.
template <typename F>
void by_channels(int64_t C, F&& f) {
  switch (C) {
    case 4: return f(std::integral_constant<int, 4>{});
    case 6: return f(std::integral_constant<int, 6>{});
    case 8: return f(std::integral_constant<int, 8>{});
    case 12: return f(std::integral_constant<int, 12>{});
    case 16: return f(std::integral_constant<int, 16>{});
    case 32: return f(std::integral_constant<int, 32>{});
    default: return f(std::integral_constant<int, 0>{});
  }
}

}  // namespace

at::Tensor triplane_forward_cuda(const at::Tensor& planes, const at::Tensor& points,
                                 int64_t agg) {
  check(planes, points, agg);
  const c10::cuda::CUDAGuard guard(points.device());
  const int64_t B = planes.size(0), C = planes.size(2), N = points.size(1);
  auto out = at::empty({B, N, agg == kConcat ? 3 * C : C}, points.options());
  if (B * N == 0 || C == 0) return out.zero_();
  const at::Tensor pcl = planes.permute({0, 1, 3, 4, 2}).contiguous();
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_forward_cuda", [&] {
    const auto a = args_of<scalar_t>(pcl, points, agg);
    by_channels(C, [&](auto cc) {
      forward_kernel<scalar_t, decltype(cc)::value>
          <<<grid_for(B * N), kThreads, 0, stream>>>(a, out.data_ptr<scalar_t>());
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return out;
}

std::vector<at::Tensor> triplane_backward_cuda(const at::Tensor& planes, const at::Tensor& points,
                                               const at::Tensor& g_out, int64_t agg,
                                               bool want_planes, bool want_points) {
  check(planes, points, agg);
  const c10::cuda::CUDAGuard guard(points.device());
  const int64_t B = planes.size(0), C = planes.size(2), H = planes.size(3), W = planes.size(4);
  const int64_t N = points.size(1);
  TORCH_CHECK(g_out.is_cuda() && g_out.is_contiguous() &&
                  g_out.scalar_type() == points.scalar_type() &&
                  g_out.numel() == B * N * (agg == kConcat ? 3 : 1) * C,
              "neural3d triplane backward (cuda): bad output gradient");
  at::Tensor g_cl = want_planes ? at::zeros({B, 3, H, W, C}, planes.options()) : at::Tensor();
  at::Tensor g_points = want_points ? at::zeros_like(points) : at::Tensor();
  if (B * N > 0 && C > 0 && (want_planes || want_points)) {
    // the planes' values are read only for the points' gradient
    const at::Tensor pcl = want_points ? planes.permute({0, 1, 3, 4, 2}).contiguous()
                                       : planes.permute({0, 1, 3, 4, 2});
    auto stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES(planes.scalar_type(), "neural3d_triplane_backward_cuda", [&] {
      auto a = args_of<scalar_t>(pcl, points, agg);
      if (!want_points) a.planes = nullptr;
      scalar_t* gpl = want_planes ? g_cl.data_ptr<scalar_t>() : nullptr;
      scalar_t* gpt = want_points ? g_points.data_ptr<scalar_t>() : nullptr;
      by_channels(C, [&](auto cc) {
        backward_kernel<scalar_t, decltype(cc)::value>
            <<<grid_for(B * N), kThreads, 0, stream>>>(a, g_out.data_ptr<scalar_t>(), gpl, gpt);
      });
    });
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  at::Tensor g_planes = want_planes ? g_cl.permute({0, 1, 4, 2, 3}).contiguous() : at::Tensor();
  return {g_planes, g_points};
}

}  // namespace n3d_cuda
