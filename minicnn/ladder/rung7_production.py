"""Rung 7: the production op, minicnn.nn.fast.convnet.conv_relu_pool_linear_loss, imported, not copied
(it is what `minicnn train` runs for the paper's model; its kernels are in minicnn/nn/fast/). Changed
from rung 6, each with what it bought when it went in (benchmarks/README.md, measured alternating):

- The whole model in one kernel. Rung 6 still runs three parallel loops per step (forward, head,
  backward), and the pooled maps, their codes and their gradients go through memory between them.
  Here a thread carries its images from the pixels to the logits, the loss and back to dw, and only
  the 10 logits of an image reach memory: training 1.04-1.16x against the kernels layer by layer.
- Groups of four images. The linear weight (87 KB) does not fit the 48 KB L1 cache; read once per
  four images for the logits and its gradient, 1.16-1.18x. The conv and weight-gradient passes run
  over the four images side by side, so a pass's fixed costs are paid once per group, 1.03-1.05x.
- The weight gradient from the codes by selects: only the argmax cell of a window has a gradient, so
  each tap meets one pixel of the 4x4 tile; picking the 3x3 block at that cell with selects leaves 9
  multiply-adds per window, not rung 6's 36 (that loop 1.4x, training 1.03-1.08x).
- Buffers on cache lines: Numba aligns arrays to 32 bytes, and a 512-bit load that straddles two
  64-byte lines costs two loads: 1.05-1.08x.
- Image unpacking by vector shuffles (vpermt2ps, a small LLVM intrinsic): rung 5's fill is a scatter
  that LLVM cannot vectorise; unpacking 1.2-2x, the op 1.02-1.07x.
- Short sums: each conv output as three row sums added at the end (three dependent multiply-adds deep,
  not nine): 1.01-1.05x. Flat unsigned offsets into the quarter planes rather than slices (rung 6's
  eight slices serve it too; with sixteen, LLVM ran out of registers for their addresses).
- Pruning: taps and channels of zero weights skipped (below 45 % of weights kept, each filter's kept
  taps in one pass, _simd_taps.py), masks, and the reference's NaNs where an input is not finite.

Why these are not rungs: each is worth a few percent, and each costs a screen of code that teaches
nothing new about the convolution (four images' loops written out, a hand-written intrinsic, address
arithmetic). The ideas that bought the large factors are rungs 3 to 6. 512-bit vectors are on every
Numba rung already: they come with the decorators of minicnn/nn/fast/_jit.py (a training step 1.2x).
"""

# its contract adds two optional arguments, the pruning masks
from minicnn.nn.fast.convnet import conv_relu_pool_linear_loss  # noqa: F401
