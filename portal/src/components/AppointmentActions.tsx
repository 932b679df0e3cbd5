import { Button, Group } from "@mantine/core";
import { useMutation, useQueryClient } from "@tanstack/react-query";
import { appointmentsCancel, appointmentsComplete, appointmentsNoShow } from "../client/sdk.gen";
import type { AppointmentPublic } from "../client/types.gen";
import { unwrap } from "../lib/api";
import { useMe } from "../lib/hooks";
import { notifyDone, notifyFailed } from "./ui";
import { ConfirmButton } from "./ConfirmButton";

type Action = "cancel" | "complete" | "no-show";
const CALLS = { cancel: appointmentsCancel, complete: appointmentsComplete, "no-show": appointmentsNoShow };
const DONE = {
  cancel: "The appointment is cancelled.",
  complete: "The appointment is marked completed.",
  "no-show": "The appointment is marked as a no-show.",
};

/** Cancel (anyone who may see it), complete and no-show (staff and admins); only while BOOKED. */
export function AppointmentActions({ appointment, when }: { appointment: AppointmentPublic; when: string }) {
  const me = useMe().data;
  const queryClient = useQueryClient();
  const change = useMutation({
    mutationFn: (action: Action) => unwrap(CALLS[action]({ path: { appointment_id: appointment.id } })),
    onSuccess: async (saved, action) => {
      queryClient.setQueryData(["appointment", appointment.id], saved);
      await queryClient.invalidateQueries({ queryKey: ["appointments"] });
      notifyDone(DONE[action]);
    },
    onError: (e) => notifyFailed(e, "The appointment did not change"),
  });
  if (appointment.status !== "BOOKED" || !me) return null;
  const clinicWide = me.role === "admin" || me.role === "staff";
  return (
    <Group gap="xs" wrap="wrap">
      {clinicWide ? (
        <>
          <Button size="xs" variant="light" color="green" loading={change.isPending} onClick={() => change.mutate("complete")}>
            Complete
          </Button>
          <ConfirmButton
            label="No-show"
            question={`Mark the appointment on ${when} as a no-show? This cannot be undone.`}
            confirmLabel="Mark no-show"
            onConfirm={() => change.mutate("no-show")}
          />
        </>
      ) : null}
      <ConfirmButton
        label="Cancel appointment"
        question={`Cancel the appointment on ${when}? This cannot be undone.`}
        confirmLabel="Cancel appointment"
        onConfirm={() => change.mutate("cancel")}
      />
    </Group>
  );
}
