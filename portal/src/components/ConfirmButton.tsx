// A confirmation before a destructive action.
import { Button, Group, Modal, Stack, Text } from "@mantine/core";
import { useState } from "react";

export function ConfirmButton({
  label,
  question,
  confirmLabel,
  onConfirm,
  color = "red",
  loading,
}: {
  label: string;
  question: string;
  confirmLabel: string;
  onConfirm: () => void;
  color?: string;
  loading?: boolean;
}) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <Button variant="outline" color={color} onClick={() => setOpen(true)} loading={loading}>
        {label}
      </Button>
      <Modal
        opened={open}
        onClose={() => setOpen(false)}
        title={label}
        centered
        closeButtonProps={{ "aria-label": "Close" }}
      >
        <Stack>
          <Text>{question}</Text>
          <Group justify="flex-end">
            <Button variant="default" onClick={() => setOpen(false)}>
              Keep it
            </Button>
            <Button
              color={color}
              onClick={() => {
                setOpen(false);
                onConfirm();
              }}
            >
              {confirmLabel}
            </Button>
          </Group>
        </Stack>
      </Modal>
    </>
  );
}
