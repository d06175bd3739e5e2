"""Training machinery: the shared-weight step, schedules, retraining, memory, devices and processes."""
