//! The task manager: claims stored workflows and runs them step by step, journaling each step.
