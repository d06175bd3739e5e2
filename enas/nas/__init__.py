"""The paper's algorithm: search space, controller, REINFORCE, the search loop, derive, final stage, scores."""
