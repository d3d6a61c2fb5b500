"""Fault injection against real processes: ``python -m chaos`` prints the results table.

It starts a real ``redis-server`` on a free port, the vLLM stand-in, ``typeahead serve
--workers 2``, two ``typeahead worker`` processes and an open-loop ``/v1/suggest`` load, then
breaks things one at a time (Redis, a worker, the LLM, an API process, slow and idle clients)
and checks what the issue promises. Loopback only; bounded in time and traffic.
"""
