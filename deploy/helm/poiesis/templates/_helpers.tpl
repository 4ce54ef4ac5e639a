{{/* Names. */}}
{{- define "poiesis.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "poiesis.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* Selector labels of one component: include "poiesis.selector" (list . "api") */}}
{{- define "poiesis.selector" -}}
{{- $ := index . 0 -}}
app.kubernetes.io/name: {{ $.Chart.Name }}
app.kubernetes.io/instance: {{ $.Release.Name }}
app.kubernetes.io/component: {{ index . 1 }}
{{- end -}}

{{- define "poiesis.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "poiesis.taskNamespace" -}}
{{- .Values.tasks.namespace | default .Release.Namespace -}}
{{- end -}}

{{- define "poiesis.apiServiceAccount" -}}
{{- .Values.serviceAccounts.api.name | default (printf "%s-api" (include "poiesis.fullname" .)) -}}
{{- end -}}

{{- define "poiesis.tctlServiceAccount" -}}
{{- .Values.serviceAccounts.tctl.name | default (printf "%s-tctl" (include "poiesis.fullname" .)) -}}
{{- end -}}

{{/* The Secret (release namespace) and key holding the database URL for the API, tctl and migrate. */}}
{{- define "poiesis.databaseSecret" -}}
{{- .Values.database.existingSecret | default (printf "%s-database" (include "poiesis.fullname" .)) -}}
{{- end -}}
{{- define "poiesis.databaseKey" -}}
{{- if .Values.database.existingSecret }}{{ .Values.database.existingSecretKey }}{{ else }}url{{ end -}}
{{- end -}}
{{/* Whether the chart makes the database Secret itself (from database.url or the in-chart PostgreSQL). */}}
{{- define "poiesis.ownsDatabaseSecret" -}}
{{- if not .Values.database.existingSecret }}true{{ end -}}
{{- end -}}

{{/* The Secret in the task namespace whose `url` key the recorders read. */}}
{{- define "poiesis.taskDatabaseSecret" -}}
{{- .Values.tasks.databaseSecret | default (include "poiesis.databaseSecret" .) -}}
{{- end -}}

{{- define "poiesis.storageSecret" -}}
{{- if .Values.tasks.storage.existingSecret -}}
{{- .Values.tasks.storage.existingSecret -}}
{{- else if .Values.tasks.storage.endpoints -}}
{{- printf "%s-storage" (include "poiesis.fullname" .) -}}
{{- end -}}
{{- end -}}

{{- define "poiesis.usersSecret" -}}
{{- if .Values.basicUsers.existingSecret -}}
{{- .Values.basicUsers.existingSecret -}}
{{- else if .Values.basicUsers.content -}}
{{- printf "%s-users" (include "poiesis.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* The in-chart PostgreSQL's password: the one already stored, else made once per render. */}}
{{- define "poiesis.postgresqlPassword" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (printf "%s-postgresql" (include "poiesis.fullname" .)) -}}
{{- if and $existing $existing.data (index $existing.data "password") -}}
{{- index $existing.data "password" | b64dec -}}
{{- else -}}
{{- if not (hasKey .Release "generatedPassword") }}{{ $_ := set .Release "generatedPassword" (randAlphaNum 32) }}{{ end -}}
{{- .Release.generatedPassword -}}
{{- end -}}
{{- end -}}

{{- define "poiesis.databaseUrl" -}}
{{- if .Values.postgresql.enabled -}}
{{- printf "postgresql://poiesis:%s@%s-postgresql:5432/poiesis" (include "poiesis.postgresqlPassword" .) (include "poiesis.fullname" .) -}}
{{- else -}}
{{- .Values.database.url -}}
{{- end -}}
{{- end -}}

{{/* The settings file: the operator's `config` with what the chart wires itself laid over it. */}}
{{- define "poiesis.settings" -}}
{{- $config := deepCopy .Values.config -}}
{{- $kubernetes := dict "namespace" (include "poiesis.taskNamespace" .) "image" (include "poiesis.image" .) "image_pull_policy" .Values.image.pullPolicy "database_secret" (include "poiesis.taskDatabaseSecret" .) -}}
{{- with include "poiesis.storageSecret" . }}{{ $_ := set $kubernetes "storage_secret" . }}{{ end -}}
{{- $_ := set $config "kubernetes" (mergeOverwrite (deepCopy (.Values.config.kubernetes | default dict)) $kubernetes) -}}
{{- $_ := set $config "tctl" (mergeOverwrite (deepCopy (.Values.config.tctl | default dict)) (dict "lease_name" (include "poiesis.leaseName" .))) -}}
{{- $_ := set $config "backend" "kubernetes" -}}
{{- $_ := set $config "host" "0.0.0.0" -}}
{{- $_ := set $config "port" (int .Values.api.port) -}}
{{- $_ := set $config "migrate_on_start" false -}}
{{- if include "poiesis.usersSecret" . }}{{ $_ := set $config "basic_users_file" "/etc/poiesis/users/users" }}{{ end -}}
{{- toToml $config -}}
{{- end -}}

{{/* Refuse an API anyone could use: authentication off on a cluster address. */}}
{{- define "poiesis.checkAuth" -}}
{{- $methods := without (.Values.config.auth | default list) "none" -}}
{{- if and (not $methods) (not .Values.config.allow_anonymous) -}}
{{- fail "config.auth is empty: the API would let anyone who reaches it run code and read every task. Set config.auth to [\"oidc\"] and/or [\"basic\"], or config.allow_anonymous: true to accept that risk" -}}
{{- end -}}
{{- if and (has "basic" $methods) (not (include "poiesis.usersSecret" .)) -}}
{{- fail "config.auth includes \"basic\": set basicUsers.existingSecret or basicUsers.content" -}}
{{- end -}}
{{- if and .Values.postgresql.enabled (or .Values.database.existingSecret .Values.database.url) -}}
{{- fail "postgresql.enabled and database.existingSecret/url are exclusive: choose one database" -}}
{{- end -}}
{{- if and (not .Values.postgresql.enabled) (not .Values.database.existingSecret) (not .Values.database.url) -}}
{{- fail "no database: set database.existingSecret (or database.url), or postgresql.enabled: true to try Poiesis out" -}}
{{- end -}}
{{- end -}}

{{/* The restricted Pod Security profile of every Poiesis Pod and container. */}}
{{- define "poiesis.podSecurity" -}}
runAsNonRoot: true
runAsUser: 10001
runAsGroup: 10001
fsGroup: 10001
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "poiesis.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: [ALL]
{{- end -}}

{{/* The environment every Poiesis process gets. */}}
{{- define "poiesis.env" -}}
- name: POIESIS_CONFIG
  value: /etc/poiesis/poiesis.toml
- name: POIESIS_DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ include "poiesis.databaseSecret" . }}
      key: {{ include "poiesis.databaseKey" . }}
{{- end -}}

{{- define "poiesis.mounts" -}}
- name: config
  mountPath: /etc/poiesis/poiesis.toml
  subPath: poiesis.toml
  readOnly: true
- name: tmp
  mountPath: /tmp
{{- if include "poiesis.usersSecret" . }}
- name: users
  mountPath: /etc/poiesis/users
  readOnly: true
{{- end }}
{{- end -}}

{{- define "poiesis.volumes" -}}
- name: config
  configMap:
    name: {{ include "poiesis.fullname" . }}
- name: tmp
  emptyDir:
    sizeLimit: 64Mi
{{- with include "poiesis.usersSecret" . }}
- name: users
  secret:
    secretName: {{ . }}
    items: [{key: users, path: users}]
{{- end }}
{{- end -}}

{{/* With the in-chart PostgreSQL, migrations run before each API and tctl Pod starts. */}}
{{- define "poiesis.migrateInit" -}}
{{- if .Values.postgresql.enabled }}
initContainers:
  - name: migrate
    image: {{ include "poiesis.image" . }}
    imagePullPolicy: {{ .Values.image.pullPolicy }}
    command: [poiesis, migrate]
    env:
      {{- include "poiesis.env" . | nindent 6 }}
    volumeMounts:
      {{- include "poiesis.mounts" . | nindent 6 }}
    securityContext:
      {{- include "poiesis.containerSecurity" . | nindent 6 }}
    resources:
      {{- toYaml .Values.migrate.resources | nindent 6 }}
{{- end }}
{{- end -}}

{{- define "poiesis.leaseName" -}}
{{- (.Values.config.tctl | default dict).lease_name | default (printf "%s-tctl" (include "poiesis.fullname" .)) -}}
{{- end -}}

{{/* Annotations for annotation-based Prometheus scraping, when metrics are on. */}}
{{- define "poiesis.scrapeAnnotations" -}}
{{- if and .Values.metrics.annotations (ne (toString .Values.config.metrics) "false") }}
prometheus.io/scrape: "true"
prometheus.io/port: {{ .Values.api.port | quote }}
prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* Where task Pods reach the apiserver: the values, else the addresses and ports of the
`kubernetes` Service's EndpointSlice (what a Pod's connection to the Service is sent to). */}}
{{- define "poiesis.apiServerEndpoints" -}}
{{- $given := .Values.networkPolicy.tasks.apiServer -}}
{{- $cidrs := $given.cidrs -}}
{{- $ports := $given.ports -}}
{{- if not $cidrs -}}
{{- $slice := lookup "discovery.k8s.io/v1" "EndpointSlice" "default" "kubernetes" -}}
{{- range ($slice.endpoints | default list) -}}
{{- range .addresses -}}
{{- $cidrs = append $cidrs (printf "%s/%s" . (ternary "128" "32" (contains ":" .))) -}}
{{- end -}}
{{- end -}}
{{- if not $ports -}}
{{- range ($slice.ports | default list) -}}
{{- $ports = append $ports .port -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- toYaml (dict "cidrs" $cidrs "ports" ($ports | default (list 443 6443))) -}}
{{- end -}}
