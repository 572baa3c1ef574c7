// kernels/cuda/conv_direct.cu: which hand-written direct kernel a convolution gets (kernels/
// conv.h's DirectKernel), so that the engine and bench_cuda_ops choose and run them alike:
// with TF32 convolutions the tensor-core ones (conv_mma.cu) where they apply, else the fp32
// ones (conv_narrow.cu).
#include "kernels/conv.h"

namespace unetcu::cuda {

const char* direct_kernel_name(DirectKernel kernel) {
  return kernel == DirectKernel::tensor_cores ? "tensor-core kernel" : "direct kernel";
}

DirectKernel direct_forward_kernel(const ConvShape& sh, const float* x, const float* y,
                                   bool tf32) {
  if (tf32 && conv2d_mma_forward_applies(sh, x, y)) return DirectKernel::tensor_cores;
  return conv2d_direct_forward_applies(sh, x, y) ? DirectKernel::fp32 : DirectKernel::none;
}

DirectKernel direct_backward_data_kernel(const ConvShape& sh, const float* dy, const float* dx,
                                         bool tf32) {
  if (tf32 && conv2d_mma_backward_data_applies(sh, dy, dx)) return DirectKernel::tensor_cores;
  return conv2d_direct_backward_data_applies(sh, dy, dx) ? DirectKernel::fp32
                                                         : DirectKernel::none;
}

DirectKernel direct_backward_filter_kernel(const ConvShape& sh, const float* dy, const float* x,
                                           bool tf32) {
  if (tf32 && conv2d_mma_backward_filter_applies(sh, dy, x)) return DirectKernel::tensor_cores;
  return conv2d_direct_backward_filter_applies(sh, dy, x) ? DirectKernel::fp32
                                                          : DirectKernel::none;
}

void direct_forward(DirectKernel kernel, float* y, const float* x, const float* wt,
                    const ConvShape& sh, cudaStream_t stream) {
  if (kernel == DirectKernel::tensor_cores)
    conv2d_mma_forward(y, x, wt, sh, stream);
  else
    conv2d_direct_forward(y, x, wt, sh, stream);
}

void direct_backward_data(DirectKernel kernel, float* dx, const float* dy, const float* wt,
                          const ConvShape& sh, GradMode mode, cudaStream_t stream) {
  if (kernel == DirectKernel::tensor_cores)
    conv2d_mma_backward_data(dx, dy, wt, sh, mode, stream);
  else
    conv2d_direct_backward_data(dx, dy, wt, sh, mode, stream);
}

size_t direct_backward_filter_workspace_bytes(DirectKernel kernel, const ConvShape& sh) {
  return kernel == DirectKernel::tensor_cores ? conv2d_mma_backward_filter_workspace_bytes(sh)
                                              : conv2d_direct_backward_filter_workspace_bytes(sh);
}

void direct_backward_filter(DirectKernel kernel, float* dwt, const float* dy, const float* x,
                            const ConvShape& sh, GradMode mode, void* workspace,
                            cudaStream_t stream) {
  if (kernel == DirectKernel::tensor_cores)
    conv2d_mma_backward_filter(dwt, dy, x, sh, mode, workspace, stream);
  else
    conv2d_direct_backward_filter(dwt, dy, x, sh, mode, workspace, stream);
}

}  // namespace unetcu::cuda
