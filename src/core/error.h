// greta::Error lives in the public header; internal code includes it through here.
#pragma once
#include "greta/error.h"
