"""The autoscaler simulated: traces, a KEDA+HPA model, an oracle and plots; never run in service."""
