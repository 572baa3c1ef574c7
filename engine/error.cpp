// engine/error.cpp: anchors the engine library (error.h is header-only).
#include "engine/error.h"
