"""2-D convolution as an autograd Function; the array kernels live in ``minidl.kernels.conv``."""
from ..autograd import Function, is_grad_enabled
from ..kernels import conv as kernels
from ..kernels.arrays import channel_sum, per_channel


class Conv2d(Function):
    """y[n,f,i,j] = sum_{c,p,q} xpad[n,c,i*sh+p,j*sw+q] w[f,c,p,q] + b[f]   (NCHW, cross-correlation).

    x (N, C, H, W), w (F, C, kh, kw), b (F,) -> y (N, F, Ho, Wo),
    Ho = (H + 2 ph - kh) // sh + 1.  dL/db = sum_{n,i,j} g; dL/dx and dL/dw come from the kernels.
    """

    def __init__(self, stride, padding):
        self.stride, self.padding = stride, padding

    def forward(self, x, weight, bias):
        # Which gradients backward will need is part of the algorithm-tuning key.
        grads = tuple(self.needs_grad[:2]) if is_grad_enabled() else (False, False)
        y, self.cache = kernels.conv2d_forward(x, weight, self.stride, self.padding, grads=grads)
        # Only CPU im2col and the reference keep x for the backward pass; the FFT and CUDA
        # caches hold transforms or cols (and the weights in their own form), so there
        # autograd need not keep or version the inputs.
        self.reads_inputs = getattr(self.cache, "x", None) is not None
        if bias is not None:  # None: the layer has no bias
            y += per_channel(bias, y)
        return y

    def backward(self, g):
        gx, gw = kernels.conv2d_backward(g, self.cache, need_x_grad=self.needs_grad[0],
                                         need_w_grad=self.needs_grad[1])
        gb = channel_sum(g) if self.needs_grad[2] else None
        return gx, gw, gb
