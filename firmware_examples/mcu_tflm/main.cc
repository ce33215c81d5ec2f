// A TFLite Micro application for a package `edgepack build --device stm32h7|esp32-s3|alif-e7` wrote.
// Copy the package's model_data.h, model_data.cc and model_ops.h next to this file (see README.md).
//
// It registers exactly the model's ops (model_ops.h), plans the arena edgepack measured (model_data.h),
// runs one inference on an input at the quantized zero (a blank sample) and prints the arena used and
// the top output. Replace fill_input() with your sensor's samples, quantized as manifest.json says
// (inputs[0].scale and zero_point).

#include <cstdint>
#include <cstring>

#include "model_data.h"
#include "model_ops.h"
#include "tensorflow/lite/micro/micro_interpreter.h"
#include "tensorflow/lite/micro/micro_log.h"
#include "tensorflow/lite/micro/system_setup.h"
#include "tensorflow/lite/schema/schema_generated.h"

namespace {

alignas(16) uint8_t tensor_arena[EDGEPACK_TENSOR_ARENA_SIZE];

void fill_input(TfLiteTensor* input) {
  // A blank sample: every element at the input's zero point (0.0 after dequantization).
  memset(input->data.int8, input->params.zero_point, input->bytes);
}

}  // namespace

int main() {
  tflite::InitializeTarget();
  const tflite::Model* model = tflite::GetModel(g_model);
  if (model->version() != TFLITE_SCHEMA_VERSION) {
    MicroPrintf("model schema %d, this TFLM reads %d", static_cast<int>(model->version()), TFLITE_SCHEMA_VERSION);
    return 1;
  }
  static EdgepackOpResolver resolver;
  if (EdgepackRegisterOps(resolver) != kTfLiteOk) {
    MicroPrintf("an op of the model is not in this TFLM build");
    return 1;
  }
  static tflite::MicroInterpreter interpreter(model, resolver, tensor_arena, sizeof(tensor_arena));
  if (interpreter.AllocateTensors() != kTfLiteOk) {
    MicroPrintf("the arena (%d bytes) is too small for this build's kernels: raise EDGEPACK_TENSOR_ARENA_SIZE",
                static_cast<int>(sizeof(tensor_arena)));
    return 1;
  }
  MicroPrintf("arena used %d of %d bytes (edgepack measured %d on the build machine)",
              static_cast<int>(interpreter.arena_used_bytes()), static_cast<int>(sizeof(tensor_arena)),
              EDGEPACK_ARENA_USED_BYTES);
  fill_input(interpreter.input(0));
  if (interpreter.Invoke() != kTfLiteOk) {
    MicroPrintf("invoke failed");
    return 1;
  }
  const TfLiteTensor* output = interpreter.output(0);
  int best = 0;
  for (int i = 1; i < static_cast<int>(output->bytes); ++i) {
    if (output->data.int8[i] > output->data.int8[best]) best = i;
  }
  MicroPrintf("top output %d (score %d, scale %f, zero point %d)", best, output->data.int8[best],
              static_cast<double>(output->params.scale), static_cast<int>(output->params.zero_point));
  return 0;
}
