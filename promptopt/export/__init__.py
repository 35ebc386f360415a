"""Training data from run stores: preference pairs (TRL, KTO, listwise) and traces.

- :func:`export_preferences` mines better and worse responses to the same input
  (program outputs), the same LLM-node messages (traced workflows) and the same
  meta-prompt (optimizer replies), and writes them as JSON lines that ``datasets``
  and TRL load as they are;
- :func:`export_traces` writes a run's traced graphs as JSON lines and GraphML.

Modules, in the order data flows: ``sources`` (reading stores), ``mining`` (pairs in
one group), ``formats`` (rows), ``splitting`` (split, order, write), ``preferences``
(the pipeline), ``traces``; ``options`` holds what is asked and what was done.
"""

from promptopt.export.options import ExportOptions, ExportReport
from promptopt.export.preferences import export_preferences
from promptopt.export.traces import export_traces

__all__ = ["ExportOptions", "ExportReport", "export_preferences", "export_traces"]
