// decode.cu: (being written this session; see the host module of the same name).
#include "common.cuh"
