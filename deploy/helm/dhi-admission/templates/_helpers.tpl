{{/*
Labels of every top-level object: the overlays' two, and Helm's. Selectors use only
app.kubernetes.io/name, as the overlays do, so they match the pods whoever installed them.
*/}}
{{- define "dhi-admission.labels" -}}
app.kubernetes.io/name: dhi-admission
app.kubernetes.io/part-of: dhi-admission
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* Labels of the lifecycle hooks' objects; their pods must not match the Service. */}}
{{- define "dhi-admission.hookLabels" -}}
app.kubernetes.io/name: dhi-admission-hook
app.kubernetes.io/part-of: dhi-admission
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{- define "dhi-admission.bootstrap" -}}
{{- if eq .Values.certificates.source "bootstrap" }}true{{ end -}}
{{- end }}

{{/* Whether the default entries end up with failurePolicy Fail (set by `certs arm`). */}}
{{- define "dhi-admission.enforcing" -}}
{{- if and (eq .Values.mode "enforce") (eq .Values.failurePolicy "Fail") }}true{{ end -}}
{{- end }}

{{/*
failurePolicy of a default entry as Helm applies it. Ignore, so that an install never fails
closed before a replica is ready: the post-install hook sets Fail once the Deployment is
Available. An upgrade keeps Fail where the live entry already has it (the old replicas keep
serving through the rollout), so upgrades do not open a fail-open window. (`lookup` sees
nothing under `helm template`: that render shows Ignore.)
Called with (dict "root" $ "kind" "MutatingWebhookConfiguration" "entry" "mutate.dhi.io").
*/}}
{{- define "dhi-admission.installFailurePolicy" -}}
{{- $policy := "Ignore" -}}
{{- if include "dhi-admission.enforcing" .root -}}
{{- $live := lookup "admissionregistration.k8s.io/v1" .kind "" "dhi-admission" -}}
{{- range (dig "webhooks" (list) $live) -}}
{{- if and (eq .name $.entry) (eq (default "" .failurePolicy) "Fail") -}}
{{- $policy = "Fail" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- $policy -}}
{{- end }}

{{/* namespaceSelector of an entry: the exclusions, then the dhi.io/mode routing. */}}
{{- define "dhi-admission.namespaceSelector" -}}
{{- $excluded := concat .root.Values.webhook.excludedNamespaces (list .root.Release.Namespace) | uniq -}}
namespaceSelector:
  matchExpressions:
    # Control-plane add-ons and the webhook itself must always be recreatable,
    # even while the webhook is down (see deploy/README.md, failure modes).
    - key: kubernetes.io/metadata.name
      operator: NotIn
      values: {{ $excluded | toJson }}
    {{- if .only }}
    - key: dhi.io/mode
      operator: In
      values: [{{ .only | quote }}]
    {{- else }}
    # "off": not judged at all; "audit", "warn": handled by the -audit and -warn entries.
    - key: dhi.io/mode
      operator: NotIn
      values: ["off", "audit", "warn"]
    {{- end }}
{{- with .root.Values.webhook.objectSelector }}
objectSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* clientConfig of an entry; caBundle is left to bootstrap or cert-manager's injector. */}}
{{- define "dhi-admission.clientConfig" -}}
clientConfig:
  service:
    namespace: {{ .root.Release.Namespace }}
    name: dhi-admission
    path: {{ .path }}
    port: 443
{{- end }}

{{/* The security context of every container the chart runs: restricted, nonroot. */}}
{{- define "dhi-admission.containerSecurityContext" -}}
securityContext:
  runAsUser: 65532
  runAsGroup: 65532
  runAsNonRoot: true
  readOnlyRootFilesystem: true
  allowPrivilegeEscalation: false
  capabilities:
    drop: ["ALL"]
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "dhi-admission.podSecurityContext" -}}
securityContext:
  runAsUser: 65532
  runAsGroup: 65532
  runAsNonRoot: true
  # Files in the volumes (the TLS key in particular) are group-readable by 65532.
  fsGroup: 65532
  seccompProfile:
    type: RuntimeDefault
{{- end }}

{{- define "dhi-admission.imagePullSecrets" -}}
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end }}

{{/* Annotations of a hook object. Called with (list $ "post-install,post-upgrade" "-5"). */}}
{{- define "dhi-admission.hookAnnotations" -}}
helm.sh/hook: {{ index . 1 }}
helm.sh/hook-weight: {{ index . 2 | quote }}
# Replaced on the next run; removed once every hook of the event has succeeded. A failed
# Job stays for `kubectl logs` until the next install, upgrade or uninstall.
helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded
{{- end }}

{{/*
The pod spec of a hook Job: dhi.io/kubectl (nonroot 65532, no shell), so each step is one
kubectl invocation, in order as init containers. Passes the restricted Pod Security profile
and the project's own policy (tests/helm_chart.rs). Called with (list $ "service-account").
*/}}
{{- define "dhi-admission.hookPodSpec" -}}
{{- $root := index . 0 -}}
serviceAccountName: {{ index . 1 }}
automountServiceAccountToken: true
enableServiceLinks: false
restartPolicy: Never
{{- include "dhi-admission.podSecurityContext" $root | nindent 0 }}
{{- include "dhi-admission.imagePullSecrets" $root | nindent 0 }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
volumes:
  # kubectl's discovery cache; the root filesystem is read-only.
  - name: tmp
    emptyDir:
      sizeLimit: 16Mi
{{- end }}

{{/* What every hook container shares. */}}
{{- define "dhi-admission.hookContainer" -}}
image: {{ .Values.hooks.image }}
imagePullPolicy: {{ .Values.imagePullPolicy }}
env:
  - name: HOME
    value: /tmp
resources:
  {{- toYaml .Values.hooks.resources | nindent 2 }}
{{- include "dhi-admission.containerSecurityContext" . | nindent 0 }}
volumeMounts:
  - name: tmp
    mountPath: /tmp
{{- end }}

{{/*
The dhi.io/failure-policy annotation of a configuration: each entry's intended policy, which
the failure-policy container (`certs arm`) sets once a replica is ready.
Called with (dict "root" $ "prefix" "mutate").
*/}}
{{- define "dhi-admission.intendedFailurePolicy" -}}
{{- $default := ternary "Fail" "Ignore" (eq (include "dhi-admission.enforcing" .root) "true") -}}
{{ .prefix }}.dhi.io={{ $default }},{{ .prefix }}-audit.dhi.io=Ignore,{{ .prefix }}-warn.dhi.io=Ignore
{{- end }}

{{/* Labels of the background audit's objects (deploy/overlays/audit-reports). */}}
{{- define "dhi-admission.auditLabels" -}}
app.kubernetes.io/name: dhi-admission-audit
app.kubernetes.io/part-of: dhi-admission
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}
