{{- define "io.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "io.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else if contains (include "io.name" .) .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "io.name" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "io.selectorLabels" -}}
app.kubernetes.io/name: {{ include "io.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "io.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "io.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "io.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "io.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- /* Rules for the namespaces whose Integrations are managed. */}}
{{- define "io.namespacedRules" }}
  # Integrations: the objects reconciled.
  - apiGroups: ["integration-operator.io"]
    resources: ["integrations"]
    verbs: ["get", "list", "watch"]
  # patch: add and remove the cleanup finalizer (metadata.finalizers only).
  - apiGroups: ["integration-operator.io"]
    resources: ["integrations"]
    verbs: ["patch"]
  # Status: conditions, expiry and renewal times.
  - apiGroups: ["integration-operator.io"]
    resources: ["integrations/status"]
    verbs: ["patch"]
  # Secrets: list/watch (metadata-only requests) to notice changed input
  # Secrets and damaged output Secrets; get to read input Secrets and verify
  # outputs; create/patch to write output Secrets (server-side apply).
  # No delete: output Secrets are garbage-collected via owner references.
  - apiGroups: [""]
    resources: ["secrets"]
    verbs: ["get", "list", "watch", "create", "patch"]
  # Events about Integrations (create, and patch for event series).
  - apiGroups: ["events.k8s.io"]
    resources: ["events"]
    verbs: ["create", "patch"]
{{- end }}
