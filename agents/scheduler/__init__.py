"""Scheduler: pairs the highest-paying ready jobs with the fastest offers (issue 3)."""
