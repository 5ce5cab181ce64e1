#include "glcm.hpp"
