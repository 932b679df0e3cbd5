// Validates ServiceMonitor and ExternalSecret manifests (JSON lines on stdin) against the schemas of
// their operators' CRDs (npm @kubernetes-models, installed by `make setup`); prints one JSON line each.
import { createInterface } from "node:readline";
import { ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1/ServiceMonitor";
import { ExternalSecret } from "@kubernetes-models/external-secrets/external-secrets.io/v1/ExternalSecret";

const models = { ServiceMonitor, ExternalSecret };
for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const doc = JSON.parse(line);
  const Model = models[doc.kind];
  let error = Model ? null : `no model for ${doc.kind}`;
  if (Model) {
    try {
      new Model(doc).validate();
    } catch (e) {
      error = e.message;
    }
  }
  console.log(JSON.stringify({ kind: doc.kind, name: doc.metadata?.name, error }));
}
