// `import gnnsparse._C_cuda` needs a module init function; the CUDA kernels of csrc/cuda/*.cu are
// registered for the CUDA dispatch key by static initialisers when the library is loaded (the
// op schemas come from gnnsparse._C, which gnnsparse loads first).
#ifdef GNNSPARSE_PYTHON_MODULE
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C_cuda(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C_cuda",
      "gnnsparse CUDA kernels (registered for torch.ops.gnnsparse.* on import).",
      -1,
      nullptr,
  };
  return PyModule_Create(&module_def);
}
#endif
