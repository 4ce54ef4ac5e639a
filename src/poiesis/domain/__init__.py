"""The pure core of Poiesis: TES types, the state machine, validation, views and the task plan.

Nothing here performs I/O or reads the clock; callers pass `now` in.
"""
