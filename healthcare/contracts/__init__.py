"""What workflows, activities, the consumer and the API share: inputs, outputs, events, ids, statuses.

Imported into the workflow sandbox (the worker passes this package through), so it must stay pure:
the standard library and pydantic only, and nothing of the project but this package.
"""
