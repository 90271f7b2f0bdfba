"""Knowledge distillation: teacher logit tables (`dsmn teach`, or made elsewhere) and their use in training."""

from dsmn.distillation.table import TeacherFileError, TeacherTable, read_teacher_table, write_teacher_table

__all__ = ["TeacherFileError", "TeacherTable", "read_teacher_table", "write_teacher_table"]
