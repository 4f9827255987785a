"""Pure domain logic of the trainer: model shapes, built-in models, device profiles, the planner."""
