// Precompiled header of the test binaries: the heavy LibTorch and GoogleTest headers once.
#pragma once

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/torch.h>
