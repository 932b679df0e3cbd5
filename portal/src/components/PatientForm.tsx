// Create or edit a patient: the API's validation errors appear next to their fields; free-form
// attributes are edited as key/value rows (a value that is JSON, e.g. ["penicillin"], stays JSON).
import { ActionIcon, Alert, Button, Group, Stack, Table, Text, TextInput, Textarea } from "@mantine/core";
import { useForm } from "@mantine/form";
import { useState } from "react";
import type { PatientCreate, PatientPublic, PatientUpdate } from "../client/types.gen";
import { ApiError, errorMessage } from "../lib/api";

type Row = { key: string; value: string };
type Values = { name: string; dateOfBirth: string; gender: string; condition: string; attributes: Row[] };

export function valueText(value: unknown): string {
  return typeof value === "string" ? value : JSON.stringify(value);
}

function parseValue(text: string): unknown {
  const t = text.trim();
  if (/^[[{]/.test(t) || t === "true" || t === "false" || t === "null" || /^-?\d+(\.\d+)?$/.test(t)) {
    try {
      return JSON.parse(t);
    } catch {
      return text;
    }
  }
  return text;
}

function toRows(attributes: Record<string, unknown> | undefined): Row[] {
  return Object.entries(attributes ?? {}).map(([key, value]) => ({ key, value: valueText(value) }));
}

export function PatientForm({
  patient,
  submitLabel,
  onSubmit,
  onCancel,
}: {
  patient?: PatientPublic;
  submitLabel: string;
  onSubmit: (body: PatientCreate | PatientUpdate) => Promise<void>;
  onCancel?: () => void;
}) {
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const form = useForm<Values>({
    initialValues: {
      name: patient?.name ?? "",
      dateOfBirth: patient?.dateOfBirth ?? "",
      gender: patient?.gender ?? "",
      condition: patient?.condition ?? "",
      attributes: toRows(patient?.attributes),
    },
    validate: {
      name: (v) => (v.trim() ? null : "Enter the patient's name"),
      attributes: {
        key: (k, values, path) => {
          const index = Number(path.split(".")[1]);
          if (!k.trim()) return values.attributes[index].value ? "Enter a name for this value" : null;
          const dup = values.attributes.findIndex((r) => r.key.trim() === k.trim());
          return dup !== index ? "This name is used twice" : null;
        },
      },
    },
  });

  const submit = form.onSubmit(async (values) => {
    setError(null);
    const attributes: Record<string, unknown> = {};
    for (const row of values.attributes) if (row.key.trim()) attributes[row.key.trim()] = parseValue(row.value);
    if (patient) {
      for (const key of Object.keys(patient.attributes ?? {})) if (!(key in attributes)) attributes[key] = null;
    }
    const body: PatientCreate = {
      name: values.name,
      dateOfBirth: values.dateOfBirth || null,
      gender: values.gender || null,
      condition: values.condition || null,
      attributes,
    };
    setBusy(true);
    try {
      await onSubmit(body);
    } catch (e) {
      if (e instanceof ApiError) {
        const fields = e.fieldErrors();
        const known = ["name", "dateOfBirth", "gender", "condition", "attributes"];
        const mine = Object.fromEntries(Object.entries(fields).filter(([k]) => known.includes(k)));
        if (Object.keys(mine).length) {
          form.setErrors(mine);
          setError("Some fields need attention.");
        } else setError(e.message);
      } else setError(errorMessage(e));
    } finally {
      setBusy(false);
    }
  });

  const rows = form.values.attributes;
  return (
    <form onSubmit={submit} noValidate>
      <Stack maw={640}>
        {error ? (
          <Alert color="red" role="alert" title="Not saved">
            {error}
          </Alert>
        ) : null}
        <TextInput label="Name" required autoComplete="off" {...form.getInputProps("name")} />
        <TextInput label="Date of birth" type="date" {...form.getInputProps("dateOfBirth")} />
        <TextInput label="Gender" {...form.getInputProps("gender")} />
        <Textarea label="Condition" autosize minRows={2} {...form.getInputProps("condition")} />
        <fieldset className="plain-fieldset">
          <legend>
            <Text fw={600} component="span">
              Other details
            </Text>
          </legend>
          {form.errors.attributes ? (
            <Text c="red.8" size="sm" role="alert">
              {form.errors.attributes}
            </Text>
          ) : null}
          {rows.length ? (
            <Table verticalSpacing={4} withRowBorders={false}>
              <Table.Tbody>
                {rows.map((_, i) => (
                  <Table.Tr key={i}>
                    <Table.Td>
                      <TextInput label={`Detail ${i + 1} name`} {...form.getInputProps(`attributes.${i}.key`)} />
                    </Table.Td>
                    <Table.Td>
                      <TextInput label={`Detail ${i + 1} value`} {...form.getInputProps(`attributes.${i}.value`)} />
                    </Table.Td>
                    <Table.Td valign="bottom">
                      <ActionIcon
                        variant="subtle"
                        color="red"
                        size="lg"
                        aria-label={`Remove detail ${i + 1}`}
                        onClick={() => form.removeListItem("attributes", i)}
                      >
                        <span aria-hidden>×</span>
                      </ActionIcon>
                    </Table.Td>
                  </Table.Tr>
                ))}
              </Table.Tbody>
            </Table>
          ) : (
            <Text size="sm" c="dimmed">
              No other details.
            </Text>
          )}
          <Button
            variant="light"
            mt="xs"
            size="xs"
            onClick={() => form.insertListItem("attributes", { key: "", value: "" })}
          >
            Add detail
          </Button>
        </fieldset>
        <Group>
          <Button type="submit" loading={busy}>
            {submitLabel}
          </Button>
          {onCancel ? (
            <Button variant="default" onClick={onCancel}>
              Cancel
            </Button>
          ) : null}
        </Group>
      </Stack>
    </form>
  );
}
