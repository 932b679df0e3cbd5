{{/* Names, labels and the pieces every pod of the release shares. */}}

{{- define "healthcare.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Room is left for a role suffix ("-consumer", "-migrate-<rev>"): object names stay under 63. */}}
{{- define "healthcare.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "healthcare.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/name: {{ include "healthcare.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: healthcare
{{- end -}}

{{/* Selector labels of one role: pass (dict "root" $ "role" "api"). */}}
{{- define "healthcare.selectorLabels" -}}
app.kubernetes.io/name: {{ include "healthcare.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .role }}
{{- end -}}

{{- define "healthcare.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "healthcare.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "healthcare.secretName" -}}
{{- if .Values.secrets.externalSecret.enabled -}}
{{- printf "%s-env" (include "healthcare.fullname" .) -}}
{{- else -}}
{{- required "secrets.existingSecret (or secrets.externalSecret) is required" .Values.secrets.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* An image reference: repository@digest, else repository:tag; `latest` is refused. */}}
{{- define "healthcare.imageRef" -}}
{{- $repo := required "image repository is required" .repository -}}
{{- if .digest -}}
{{- printf "%s@%s" $repo .digest -}}
{{- else -}}
{{- $tag := required "image tag (or digest) is required" .tag -}}
{{- if eq $tag "latest" -}}{{- fail "image tag `latest` is not allowed: pin a version or a digest" -}}{{- end -}}
{{- printf "%s:%s" $repo $tag -}}
{{- end -}}
{{- end -}}

{{- define "healthcare.image" -}}
{{- include "healthcare.imageRef" .Values.image -}}
{{- end -}}

{{/* Pod Security "restricted": the pod level. */}}
{{- define "healthcare.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Pod Security "restricted": each container. */}}
{{- define "healthcare.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: ["ALL"]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Scheduling shared by every role: pass (dict "root" $ "role" "api"). */}}
{{- define "healthcare.scheduling" -}}
{{- $v := .root.Values -}}
{{- with $v.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $v.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- if $v.topologySpread.enabled }}
topologySpreadConstraints:
  - maxSkew: {{ $v.topologySpread.maxSkew }}
    topologyKey: topology.kubernetes.io/zone
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "healthcare.selectorLabels" . | nindent 8 }}
  - maxSkew: {{ $v.topologySpread.maxSkew }}
    topologyKey: kubernetes.io/hostname
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- include "healthcare.selectorLabels" . | nindent 8 }}
{{- end }}
{{- end -}}

{{/* The roles that run as Deployments, in a fixed order, with what differs between them. */}}
{{- define "healthcare.roles" -}}
{{- $v := .Values -}}
api:
  enabled: {{ $v.api.enabled }}
  port: {{ $v.api.port }}
  portName: http
  liveness: /healthz
  readiness: /readyz
  metricsPath: /metrics
worker:
  enabled: {{ $v.worker.enabled }}
  port: {{ $v.worker.metricsPort }}
  portName: metrics
  liveness: /metrics
  readiness: /metrics
  metricsPath: /metrics
consumer:
  enabled: {{ $v.consumer.enabled }}
  port: {{ $v.consumer.metricsPort }}
  portName: metrics
  liveness: /metrics
  readiness: /metrics
  metricsPath: /metrics
relay:
  enabled: {{ $v.relay.enabled }}
  port: {{ $v.relay.port }}
  portName: http
  liveness: /healthz
  readiness: /healthz
  metricsPath: ""
codec:
  enabled: {{ $v.codec.enabled }}
  port: {{ $v.codec.port }}
  portName: http
  liveness: /healthz
  readiness: /healthz
  metricsPath: ""
{{- end -}}

{{/* The ConfigMap's data (also hashed into each pod's annotations so a change rolls the pods). */}}
{{- define "healthcare.configData" -}}
{{- $v := .Values -}}
HC_ENV: {{ $v.environment | quote }}
HC_LOG_LEVEL: {{ $v.log.level | quote }}
HC_LOG_JSON: {{ $v.log.json | quote }}
HC_DB_POOL_SIZE: {{ $v.postgresql.poolSize | quote }}
HC_TEMPORAL_ADDRESS: {{ required "temporal.address is required" $v.temporal.address | quote }}
HC_TEMPORAL_NAMESPACE: {{ $v.temporal.namespace | quote }}
HC_TEMPORAL_TASK_QUEUE: {{ $v.temporal.taskQueue | quote }}
HC_TEMPORAL_TLS: {{ $v.temporal.tls | quote }}
{{- with $v.temporal.uiUrl }}
HC_TEMPORAL_UI_URL: {{ . | quote }}
{{- end }}
HC_KAFKA_BOOTSTRAP_SERVERS: {{ required "kafka.bootstrapServers is required" $v.kafka.bootstrapServers | quote }}
HC_KAFKA_SECURITY_PROTOCOL: {{ $v.kafka.securityProtocol | quote }}
{{- with $v.kafka.saslMechanism }}
HC_KAFKA_SASL_MECHANISM: {{ . | quote }}
{{- end }}
HC_TOPIC_APPOINTMENT_EVENTS: {{ $v.kafka.topics.appointmentEvents | quote }}
HC_TOPIC_ANALYTICS_RESULTS: {{ $v.kafka.topics.analyticsResults | quote }}
HC_TOPIC_APPOINTMENT_EVENTS_DLQ: {{ $v.kafka.topics.appointmentEventsDlq | quote }}
HC_AWS_REGION: {{ required "aws.region is required" $v.aws.region | quote }}
# Empty: the SDK's credential chain (the workload role of serviceAccount.annotations). Static keys,
# if any, come from the Secret, which is listed after this ConfigMap and so wins.
HC_AWS_ACCESS_KEY_ID: ""
HC_S3_BUCKET: {{ required "s3.bucket is required" $v.s3.bucket | quote }}
HC_S3_ENDPOINT_URL: {{ $v.s3.endpointUrl | quote }}
HC_LAMBDA_FUNCTION_NAME: {{ required "lambda.functionName is required" $v.lambda.functionName | quote }}
HC_LAMBDA_ENDPOINT_URL: {{ $v.lambda.endpointUrl | quote }}
HC_PATIENT_STORE: {{ $v.patientStore | quote }}
HC_DYNAMODB_PATIENTS_TABLE: {{ $v.dynamodb.patientsTable | quote }}
HC_JWT_ISSUER: {{ $v.auth.jwtIssuer | quote }}
HC_JWT_AUDIENCE: {{ $v.auth.jwtAudience | quote }}
HC_JWT_TTL_SECONDS: {{ $v.auth.jwtTtlSeconds | quote }}
HC_BCRYPT_ROUNDS: {{ $v.auth.bcryptRounds | quote }}
# Online payment needs a provider adapter that production does not have yet: desk payments only.
HC_PAYMENT_PROVIDER: "none"
HC_API_HOST: "0.0.0.0"
HC_API_PORT: {{ $v.api.port | quote }}
HC_WS_HOST: "0.0.0.0"
HC_WS_PORT: {{ $v.relay.port | quote }}
HC_METRICS_HOST: "0.0.0.0"
HC_STATE_DIR: "/tmp/healthcare"
{{- if and $v.ingress.enabled $v.ingress.host }}
HC_PUBLIC_WS_URL: {{ printf "%s://%s/ws/analytics" (ternary "wss" "ws" $v.ingress.tls.enabled) $v.ingress.host | quote }}
{{- end }}
{{- range $name, $value := $v.config }}
{{ $name }}: {{ $value | toString | quote }}
{{- end }}
{{- end -}}
