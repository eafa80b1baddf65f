"""2-D convolution as an autograd Function; the array kernels live in ``minidl.kernels.conv``."""
from ..autograd import Function, is_grad_enabled
from ..kernels import conv as kernels
from ..kernels import conv2d_transpose, conv2d_weight
from ..kernels.arrays import channel_sum, per_channel


class Conv2d(Function):
    """y[n,f,i,j] = sum_{c,p,q} xpad[n,c,i*sh+p,j*sw+q] w[f,c,p,q] + b[f]   (NCHW, cross-correlation).

    x (N, C, H, W), w (F, C, kh, kw), b (F,) -> y (N, F, Ho, Wo),
    Ho = (H + 2 ph - kh) // sh + 1.  dL/db = sum_{n,i,j} g; dL/dx and dL/dw come from the kernels.
    """

    keeps_input_arrays = True  # for backward_graph: the kernels' caches may hold only transforms

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

    def backward_graph(self, g):
        x_arr, w_arr, _ = self.input_arrays
        x, w = self.input_tensor(0, x_arr), self.input_tensor(1, w_arr)
        conv = dict(stride=self.stride, padding=self.padding)
        return (Conv2dTranspose.apply(g, w, x_hw=x_arr.shape[2:], **conv) if self.needs_grad[0] else None,
                Conv2dWeight.apply(x, g, kernel=w_arr.shape[2:], **conv) if self.needs_grad[1] else None,
                g.sum(axis=(0, 2, 3)) if self.needs_grad[2] else None)


class Conv2dTranspose(Function):
    """gx = conv2d_transpose(g, w): the gradient of conv2d's input, as an op of (g, w).

    g (N, F, Ho, Wo), w (F, C, kh, kw) -> gx (N, C, H, W). It is bilinear, and from
    <conv2d(x, w), g> = <x, gx>:  dL/dg = conv2d(h, w),  dL/dw = conv2d_weight(h, g)
    for h = dL/dgx (``kernels.conv_transpose``).
    """

    def __init__(self, x_hw, stride, padding):
        self.x_hw, self.stride, self.padding = tuple(x_hw), stride, padding

    def forward(self, g, w):
        self.g, self.w = g, w
        return conv2d_transpose(g, w, self.x_hw, self.stride, self.padding)

    def backward(self, h):
        return (kernels.conv2d_forward(h, self.w, self.stride, self.padding, grads=(False, False))[0]
                if self.needs_grad[0] else None,
                conv2d_weight(h, self.g, self.w.shape[2:], self.stride, self.padding)
                if self.needs_grad[1] else None)

    def backward_graph(self, h):
        g, w = self.input_tensor(0, self.g), self.input_tensor(1, self.w)
        conv = dict(stride=self.stride, padding=self.padding)
        return (Conv2d.apply(h, w, None, **conv) if self.needs_grad[0] else None,
                Conv2dWeight.apply(h, g, kernel=self.w.shape[2:], **conv) if self.needs_grad[1] else None)


class Conv2dWeight(Function):
    """gw = conv2d_weight(x, g): the gradient of conv2d's weight, as an op of (x, g).

    x (N, C, H, W), g (N, F, Ho, Wo) -> gw (F, C, kh, kw). It is bilinear, and from
    <conv2d(x, w), g> = <w, gw>:  dL/dx = conv2d_transpose(g, k),  dL/dg = conv2d(x, k)
    for k = dL/dgw (``kernels.conv_transpose``).
    """

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = tuple(kernel), stride, padding

    def forward(self, x, g):
        self.x, self.g = x, g
        return conv2d_weight(x, g, self.kernel, self.stride, self.padding)

    def backward(self, k):
        return (conv2d_transpose(self.g, k, self.x.shape[2:], self.stride, self.padding)
                if self.needs_grad[0] else None,
                kernels.conv2d_forward(self.x, k, self.stride, self.padding, grads=(False, False))[0]
                if self.needs_grad[1] else None)

    def backward_graph(self, k):
        x, g = self.input_tensor(0, self.x), self.input_tensor(1, self.g)
        conv = dict(stride=self.stride, padding=self.padding)
        return (Conv2dTranspose.apply(g, k, x_hw=self.x.shape[2:], **conv) if self.needs_grad[0] else None,
                Conv2d.apply(x, k, None, **conv) if self.needs_grad[1] else None)
