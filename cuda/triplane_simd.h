// neural3d: triplane sampling on the CPU, the per-point loops (lanes = channels).
//
// Included several times by triplane_cpu.cpp, each time inside its own namespace and under its
// own `#pragma GCC target` (baseline x86-64, AVX2+FMA, AVX-512), like composite_simd.h. The
// planes arrive channels-last ([B, 3, H, W, C], transposed once per call), so a bilinear tap is
// four contiguous C-vectors and every channel loop below is a plain, unit-stride loop the
// compiler vectorises for the target ISA; CC > 0 compiles the channel count in (unrolled,
// accumulators in registers), CC = 0 takes it at run time.
//
// Conventions are grid_sample's (bilinear, padding_mode="border", align_corners=False): plane p
// samples the point's axes PLANE_AXES[p] = (0, 1), (0, 2), (1, 2), the first as the width index;
// ix = ((u + 1) W - 1) / 2 clipped to [0, W - 1]; a clipped coordinate (the border itself
// included, as torch counts it) gets no gradient. NaN coordinates sample the first texel.
//
// Requires <algorithm>, <cstdint>, <vector>, and TriArgs / TriGrads / LinArgs of
// triplane_cpu.cpp.

#define N3D_TP_INLINE static inline __attribute__((always_inline))

// One plane's bilinear tap: the four texel offsets (in elements of the channels-last plane), the
// weights (torch's nw, ne, sw, se) and d(ix)/du, d(iy)/dv (0 where clipped).
template <typename T>
struct Tap {
  int64_t o[4];
  T w[4];
  T ax, bx, ay, by;  // 1 - fx, fx, 1 - fy, fy (torch's exact differences)
  T gx, gy;
};

template <typename T>
N3D_TP_INLINE void make_tap(T u, T v, int64_t H, int64_t Wd, int64_t C, Tap<T>& t) {
  T ix = ((u + T(1)) * T(Wd) - T(1)) / T(2);
  T iy = ((v + T(1)) * T(H) - T(1)) / T(2);
  t.gx = T(Wd) / T(2);
  t.gy = T(H) / T(2);
  if (!(ix > T(0))) { ix = T(0); t.gx = T(0); }
  else if (ix >= T(Wd - 1)) { ix = T(Wd - 1); t.gx = T(0); }
  if (!(iy > T(0))) { iy = T(0); t.gy = T(0); }
  else if (iy >= T(H - 1)) { iy = T(H - 1); t.gy = T(0); }
  const int64_t x0 = (int64_t)ix, y0 = (int64_t)iy;  // ix, iy >= 0: truncation is floor
  // the far texel of a tap on the last row/column has weight 0; clamp it to stay in the plane
  const int64_t x1 = x0 + (x0 < Wd - 1), y1 = y0 + (y0 < H - 1);
  t.ax = T(x0 + 1) - ix;
  t.bx = ix - T(x0);
  t.ay = T(y0 + 1) - iy;
  t.by = iy - T(y0);
  t.w[0] = t.ax * t.ay;  // nw (x0, y0)
  t.w[1] = t.bx * t.ay;  // ne (x1, y0)
  t.w[2] = t.ax * t.by;  // sw (x0, y1)
  t.w[3] = t.bx * t.by;  // se (x1, y1)
  t.o[0] = (y0 * Wd + x0) * C;
  t.o[1] = (y0 * Wd + x1) * C;
  t.o[2] = (y1 * Wd + x0) * C;
  t.o[3] = (y1 * Wd + x1) * C;
}

// Forward for the flat points [i0, i1) of B * N. out: their rows of the [B, N, C] (sum, mean)
// or [B, N, 3C] output, starting with point i0's.
template <typename T, int CC>
static void forward_range_c(const TriArgs<T>& a, T* __restrict__ out, int64_t i0, int64_t i1) {
  const int64_t C = CC > 0 ? CC : a.C;
  const int64_t plane = a.H * a.W * C;
  constexpr int kAx[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  int64_t b = i0 / a.N, b_end = (b + 1) * a.N;  // batch element of point i, its end
  for (int64_t i = i0; i < i1; ++i) {
    if (i == b_end) ++b, b_end += a.N;
    const T* __restrict__ pt = a.points + i * 3;
    const T* __restrict__ base = a.planes + b * 3 * plane;
    T* __restrict__ dst = out + (i - i0) * (a.agg == kConcat ? 3 * C : C);
    T acc[CC > 0 ? CC : 1];
    for (int p = 0; p < 3; ++p) {
      Tap<T> t;
      make_tap<T>(pt[kAx[p][0]], pt[kAx[p][1]], a.H, a.W, C, t);
      const T* __restrict__ pl = base + p * plane;
      const T* __restrict__ r0 = pl + t.o[0];
      const T* __restrict__ r1 = pl + t.o[1];
      const T* __restrict__ r2 = pl + t.o[2];
      const T* __restrict__ r3 = pl + t.o[3];
      if (a.agg == kConcat) {
        T* __restrict__ d = dst + p * C;
        for (int64_t c = 0; c < C; ++c)
          d[c] = t.w[0] * r0[c] + t.w[1] * r1[c] + t.w[2] * r2[c] + t.w[3] * r3[c];
      } else if constexpr (CC > 0) {
        for (int c = 0; c < CC; ++c) {
          const T v = t.w[0] * r0[c] + t.w[1] * r1[c] + t.w[2] * r2[c] + t.w[3] * r3[c];
          acc[c] = p == 0 ? v : acc[c] + v;
        }
      } else {
        for (int64_t c = 0; c < C; ++c) {
          const T v = t.w[0] * r0[c] + t.w[1] * r1[c] + t.w[2] * r2[c] + t.w[3] * r3[c];
          dst[c] = p == 0 ? v : dst[c] + v;
        }
      }
    }
    if (a.agg == kConcat) continue;
    if constexpr (CC > 0) {
      if (a.agg == kMean)
        for (int c = 0; c < CC; ++c) dst[c] = acc[c] / T(3);
      else
        for (int c = 0; c < CC; ++c) dst[c] = acc[c];
    } else if (a.agg == kMean) {
      for (int64_t c = 0; c < C; ++c) dst[c] = dst[c] / T(3);
    }
  }
}

// Backward for the flat points [i0, i1), g.g_out starting with point i0's row: plane gradients
// accumulated (+=) into `tile` (null: not wanted), the channels-last gradient of the planes of
// batch elements b_lo, b_lo + 1, ... that this thread owns (no other thread writes it); with
// kPts, point gradients written to g.g_points (all B * N rows, indexed by the flat point).
template <typename T, int CC, bool kPts>
static void backward_range_c(const TriArgs<T>& a, const TriGrads<T>& g, T* __restrict__ tile,
                             int64_t b_lo, int64_t i0, int64_t i1) {
  const int64_t C = CC > 0 ? CC : a.C;
  const int64_t plane = a.H * a.W * C;
  const int64_t oc = a.agg == kConcat ? 3 * C : C;
  constexpr int kAx[3][2] = {{0, 1}, {0, 2}, {1, 2}};
  int64_t b = i0 / a.N, b_end = (b + 1) * a.N;
  for (int64_t i = i0; i < i1; ++i) {
    if (i == b_end) ++b, b_end += a.N;
    const T* __restrict__ pt = a.points + i * 3;
    const T* __restrict__ go = g.g_out + (i - i0) * oc;
    T* tb = tile ? tile + (b - b_lo) * 3 * plane : nullptr;
    const T* __restrict__ base = a.planes + b * 3 * plane;
    T gp[3] = {T(0), T(0), T(0)};
    for (int p = 0; p < 3; ++p) {
      Tap<T> t;
      make_tap<T>(pt[kAx[p][0]], pt[kAx[p][1]], a.H, a.W, C, t);
      // gv: the cotangent of this plane's sample: the output's (sum), a third of it (mean), or
      // its own slice (concat). CC > 0: a local copy (registers; no aliasing with the tile)
      const T* __restrict__ gc = go + (a.agg == kConcat ? p * C : 0);
      const T scale = a.agg == kMean ? T(1) / T(3) : T(1);
      T gl[CC > 0 ? CC : 1];
      if constexpr (CC > 0)
        for (int c = 0; c < CC; ++c) gl[c] = gc[c] * scale;
      const T* gv = CC > 0 ? gl : gc;
      const T sv = CC > 0 ? T(1) : scale;
      if (tile) {
        T* q0 = tb + p * plane + t.o[0];
        T* q1 = tb + p * plane + t.o[1];
        T* q2 = tb + p * plane + t.o[2];
        T* q3 = tb + p * plane + t.o[3];
        // The four texels are updated one after the other (no __restrict__): on the last
        // column/row the far texel is clamped onto the near one, with weight 0.
        for (int64_t c = 0; c < C; ++c) q0[c] += t.w[0] * (gv[c] * sv);
        for (int64_t c = 0; c < C; ++c) q1[c] += t.w[1] * (gv[c] * sv);
        for (int64_t c = 0; c < C; ++c) q2[c] += t.w[2] * (gv[c] * sv);
        for (int64_t c = 0; c < C; ++c) q3[c] += t.w[3] * (gv[c] * sv);
      }
      if constexpr (kPts) {
        const T* __restrict__ pl = base + p * plane;
        const T* __restrict__ r0 = pl + t.o[0];
        const T* __restrict__ r1 = pl + t.o[1];
        const T* __restrict__ r2 = pl + t.o[2];
        const T* __restrict__ r3 = pl + t.o[3];
        T du = T(0), dv = T(0);
        for (int64_t c = 0; c < C; ++c) {
          const T gc_ = gv[c] * sv;
          du += gc_ * (t.ay * (r1[c] - r0[c]) + t.by * (r3[c] - r2[c]));
          dv += gc_ * (t.ax * (r2[c] - r0[c]) + t.bx * (r3[c] - r1[c]));
        }
        gp[kAx[p][0]] += t.gx * du;
        gp[kAx[p][1]] += t.gy * dv;
      }
    }
    if constexpr (kPts) {
      T* __restrict__ dp = g.g_points + i * 3;
      dp[0] = gp[0];
      dp[1] = gp[1];
      dp[2] = gp[2];
    }
  }
}

// Entry points: channel counts of the shipped configs get specialised code.
template <typename T>
static void forward_range(const TriArgs<T>& a, T* out, int64_t i0, int64_t i1) {
  switch (a.C) {
    case 4: return forward_range_c<T, 4>(a, out, i0, i1);
    case 6: return forward_range_c<T, 6>(a, out, i0, i1);
    case 8: return forward_range_c<T, 8>(a, out, i0, i1);
    case 12: return forward_range_c<T, 12>(a, out, i0, i1);
    case 16: return forward_range_c<T, 16>(a, out, i0, i1);
    case 32: return forward_range_c<T, 32>(a, out, i0, i1);
    default: return forward_range_c<T, 0>(a, out, i0, i1);
  }
}

template <typename T, bool kPts>
static void backward_range_p(const TriArgs<T>& a, const TriGrads<T>& g, T* tile, int64_t b_lo,
                             int64_t i0, int64_t i1) {
  switch (a.C) {
    case 4: return backward_range_c<T, 4, kPts>(a, g, tile, b_lo, i0, i1);
    case 6: return backward_range_c<T, 6, kPts>(a, g, tile, b_lo, i0, i1);
    case 8: return backward_range_c<T, 8, kPts>(a, g, tile, b_lo, i0, i1);
    case 12: return backward_range_c<T, 12, kPts>(a, g, tile, b_lo, i0, i1);
    case 16: return backward_range_c<T, 16, kPts>(a, g, tile, b_lo, i0, i1);
    case 32: return backward_range_c<T, 32, kPts>(a, g, tile, b_lo, i0, i1);
    default: return backward_range_c<T, 0, kPts>(a, g, tile, b_lo, i0, i1);
  }
}

template <typename T>
static void backward_range(const TriArgs<T>& a, const TriGrads<T>& g, T* tile, int64_t b_lo,
                           int64_t i0, int64_t i1) {
  if (g.g_points) return backward_range_p<T, true>(a, g, tile, b_lo, i0, i1);
  backward_range_p<T, false>(a, g, tile, b_lo, i0, i1);
}

// The first decoder layer fused behind the sampling (LinArgs of triplane_cpu.cpp): each chunk of
// kLinChunk points is sampled into a small buffer that stays in the L1 cache, then multiplied,
// so the [B, N, F] features (F = C, or 3C for concat) are never written to memory. Every loop
// runs over the hidden units (unit stride in W^T [F, Hd]); HH > 0 compiles Hd in (accumulators
// in registers), HH = 0 takes it at run time.
constexpr int64_t kLinChunk = 64;

// hidden rows of the points [i0, i1) (out: point i0's row first): bias + W features.
template <typename T, int HH>
static void linear_forward_range_h(const TriArgs<T>& a, const LinArgs<T>& l,
                                   T* __restrict__ out, int64_t i0, int64_t i1) {
  const int64_t F = l.F, Hd = HH > 0 ? HH : l.Hd;
  std::vector<T> feats(kLinChunk * F);
  for (int64_t c0 = i0; c0 < i1; c0 += kLinChunk) {
    const int64_t c1 = std::min(c0 + kLinChunk, i1);
    forward_range<T>(a, feats.data(), c0, c1);
    for (int64_t i = c0; i < c1; ++i) {
      const T* __restrict__ f = feats.data() + (i - c0) * F;
      T* __restrict__ dst = out + (i - i0) * Hd;
      T local[HH > 0 ? HH : 1];
      T* __restrict__ h = HH > 0 ? local : dst;
      for (int64_t j = 0; j < Hd; ++j) h[j] = l.bias[j];
      for (int64_t k = 0; k < F; ++k) {  // h += f[k] * W[:, k]
        const T fk = f[k];
        const T* __restrict__ w = l.weight_t + k * Hd;
        for (int64_t j = 0; j < Hd; ++j) h[j] += fk * w[j];
      }
      if constexpr (HH > 0)
        for (int j = 0; j < HH; ++j) dst[j] = local[j];
    }
  }
}

// Backward of linear_forward_range for the points [i0, i1), g_h starting with point i0's row:
// the features' cotangent W^T g_h feeds backward_range (plane tile, point gradients as there);
// the weight and bias gradients are accumulated (+=) into g_weight_t [F, Hd] (W's gradient,
// transposed) and g_bias [Hd], this thread's own (null: not wanted; the features are
// recomputed for g_weight_t only).
template <typename T, int HH>
static void linear_backward_range_h(const TriArgs<T>& a, const LinArgs<T>& l,
                                    const T* __restrict__ g_h, T* g_points, T* tile, int64_t b_lo,
                                    T* __restrict__ g_weight_t, T* __restrict__ g_bias,
                                    int64_t i0, int64_t i1) {
  const int64_t F = l.F, Hd = HH > 0 ? HH : l.Hd;
  constexpr int kLanes = 8;  // partial sums of a dot product over the hidden units
  std::vector<T> feats(g_weight_t ? kLinChunk * F : 0), g_feats(kLinChunk * F);
  const bool sample_grads = tile != nullptr || g_points != nullptr;
  for (int64_t c0 = i0; c0 < i1; c0 += kLinChunk) {
    const int64_t c1 = std::min(c0 + kLinChunk, i1);
    if (g_weight_t) forward_range<T>(a, feats.data(), c0, c1);
    for (int64_t i = c0; i < c1; ++i) {
      const T* __restrict__ gh = g_h + (i - i0) * Hd;
      T* __restrict__ gf = g_feats.data() + (i - c0) * F;
      const T* __restrict__ f = g_weight_t ? feats.data() + (i - c0) * F : nullptr;
      for (int64_t k = 0; k < F; ++k) {
        const T* __restrict__ w = l.weight_t + k * Hd;
        if (sample_grads) {  // gf[k] = W[:, k] . g_h
          T part[kLanes] = {};
          int64_t j = 0;
          for (; j + kLanes <= Hd; j += kLanes)
            for (int q = 0; q < kLanes; ++q) part[q] += w[j + q] * gh[j + q];
          T sum = T(0);
          for (; j < Hd; ++j) sum += w[j] * gh[j];
          for (int q = 0; q < kLanes; ++q) sum += part[q];
          gf[k] = sum;
        }
        if (g_weight_t) {
          const T fk = f[k];
          T* __restrict__ gw = g_weight_t + k * Hd;
          for (int64_t j = 0; j < Hd; ++j) gw[j] += fk * gh[j];
        }
      }
      if (g_bias)
        for (int64_t j = 0; j < Hd; ++j) g_bias[j] += gh[j];
    }
    if (sample_grads)
      backward_range<T>(a, TriGrads<T>{g_feats.data(), g_points}, tile, b_lo, c0, c1);
  }
}

// Entry points: hidden widths of the shipped decoders get specialised code.
template <typename T>
static void linear_forward_range(const TriArgs<T>& a, const LinArgs<T>& l, T* out, int64_t i0,
                                 int64_t i1) {
  switch (l.Hd) {
    case 32: return linear_forward_range_h<T, 32>(a, l, out, i0, i1);
    case 64: return linear_forward_range_h<T, 64>(a, l, out, i0, i1);
    default: return linear_forward_range_h<T, 0>(a, l, out, i0, i1);
  }
}

template <typename T>
static void linear_backward_range(const TriArgs<T>& a, const LinArgs<T>& l, const T* g_h,
                                  T* g_points, T* tile, int64_t b_lo, T* g_weight_t, T* g_bias,
                                  int64_t i0, int64_t i1) {
  switch (l.Hd) {
    case 32:
      return linear_backward_range_h<T, 32>(a, l, g_h, g_points, tile, b_lo, g_weight_t, g_bias,
                                            i0, i1);
    case 64:
      return linear_backward_range_h<T, 64>(a, l, g_h, g_points, tile, b_lo, g_weight_t, g_bias,
                                            i0, i1);
    default:
      return linear_backward_range_h<T, 0>(a, l, g_h, g_points, tile, b_lo, g_weight_t, g_bias,
                                           i0, i1);
  }
}

#undef N3D_TP_INLINE
