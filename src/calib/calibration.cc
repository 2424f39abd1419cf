#include "compress/calib/calibration.h"
