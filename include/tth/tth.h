// TorchTrainerHook: Chainer's training-extension protocol for LibTorch. The umbrella header.
// See extension.h for the protocol and torch_trainer_hook.h for the manager.
#pragma once

#include "tth/error.h"
#include "tth/extension.h"
#include "tth/reporter.h"
#include "tth/standard_updater.h"
#include "tth/state_dict.h"
#include "tth/stateful.h"
#include "tth/torch_trainer_hook.h"
#include "tth/trainer.h"
#include "tth/trigger.h"
#include "tth/triggers/best_value_trigger.h"
#include "tth/triggers/early_stopping_trigger.h"
#include "tth/triggers/function_trigger.h"
#include "tth/triggers/interval_trigger.h"
#include "tth/triggers/manual_schedule_trigger.h"
#include "tth/triggers/once_trigger.h"
#include "tth/triggers/time_trigger.h"
#include "tth/updater.h"
